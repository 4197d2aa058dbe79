"""The one metrics module: every number about predictions is computed here, for every worker alike.

Inputs are always logits (float, N x L) and labels (0/1, N x L); workers never compute a metric.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import expit
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

THRESHOLD = 0.5


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, in float64."""
    return expit(np.asarray(logits, dtype=np.float64))


def bce_with_logits(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy over all samples and labels, computed stably from logits."""
    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    return float(np.mean(np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))))


def per_label_auroc(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUROC of each label; NaN where a label has only one class in `labels` (cannot be scored)."""
    scores = np.full(labels.shape[1], np.nan)
    for j in range(labels.shape[1]):
        column = labels[:, j]
        if 0 < column.sum() < len(column):
            scores[j] = roc_auc_score(column, logits[:, j])
    return scores


def macro_auroc(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean AUROC over the labels that can be scored (NaN if none can)."""
    scores = per_label_auroc(logits, labels)
    return float(np.nanmean(scores)) if np.isfinite(scores).any() else math.nan


def evaluate(logits: np.ndarray, labels: np.ndarray, label_names: tuple[str, ...]) -> dict:
    """All metrics of one set of predictions, as plain JSON-ready values.

    AUROC per label and its macro mean; precision, recall and F1 at a 0.5 threshold on sigmoid
    outputs, averaged over labels (macro); the BCE loss. Labels without both classes are listed.
    """
    labels = np.asarray(labels).astype(np.int64)
    predicted = (sigmoid(logits) >= THRESHOLD).astype(np.int64)
    aurocs = per_label_auroc(logits, labels)
    unscorable = [name for name, value in zip(label_names, aurocs) if not np.isfinite(value)]
    return {
        "samples": int(labels.shape[0]),
        "loss": bce_with_logits(logits, labels),
        "macro_auroc": float(np.nanmean(aurocs)) if np.isfinite(aurocs).any() else None,
        "auroc": {name: (float(v) if np.isfinite(v) else None) for name, v in zip(label_names, aurocs)},
        "positives": {name: int(n) for name, n in zip(label_names, labels.sum(axis=0))},
        "precision": float(precision_score(labels, predicted, average="macro", zero_division=0)),
        "recall": float(recall_score(labels, predicted, average="macro", zero_division=0)),
        "f1": float(f1_score(labels, predicted, average="macro", zero_division=0)),
        "threshold": THRESHOLD,
        "unscorable_labels": unscorable,
    }
