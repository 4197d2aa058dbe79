"""The one metrics module: every number about predictions is computed here, for every worker alike.

Inputs are always logits (float, N x L) and labels (0/1, N x L); workers never compute a metric.
Ranking metrics (AUROC, AUPRC) use the logits; thresholded ones (precision, recall, F1) use sigmoid
outputs, at 0.5 and at a per-label threshold chosen on validation data. Macro averages are the mean
over labels; micro averages pool every (image, label) decision. Confidence intervals and paired
tests between workers live in harness.evaluation.statistics; they rest on the same definitions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import expit
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

THRESHOLD = 0.5


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, in float64."""
    return expit(np.asarray(logits, dtype=np.float64))


def bce_with_logits(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy over all samples and labels, computed stably from logits."""
    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    return float(np.mean(np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))))


def _scorable(column: np.ndarray) -> bool:
    return 0 < column.sum() < len(column)


def _per_label(score, logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    values = np.full(labels.shape[1], np.nan)
    for j in range(labels.shape[1]):
        if _scorable(labels[:, j]):
            values[j] = score(labels[:, j], logits[:, j])
    return values


def per_label_auroc(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUROC of each label; NaN where a label has only one class in `labels` (cannot be scored)."""
    return _per_label(roc_auc_score, logits, labels)


def per_label_auprc(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Area under the precision-recall curve (average precision, no interpolation) of each label; NaN as above."""
    return _per_label(average_precision_score, logits, labels)


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan


def macro_auroc(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean AUROC over the labels that can be scored (NaN if none can)."""
    return _nanmean(per_label_auroc(logits, labels))


def _micro(score, logits: np.ndarray, labels: np.ndarray) -> float:
    """A ranking metric over every (image, label) pair pooled, as sklearn's average="micro"."""
    flat = np.asarray(labels).ravel()
    return float(score(flat, np.asarray(logits).ravel())) if _scorable(flat) else math.nan


def counts_at(probabilities: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """True positives, false positives and false negatives per label when predicting p >= threshold."""
    predicted = probabilities >= thresholds[None, :]
    positive = labels == 1
    return {
        "tp": (predicted & positive).sum(axis=0),
        "fp": (predicted & ~positive).sum(axis=0),
        "fn": (~predicted & positive).sum(axis=0),
    }


def _ratio(numerator, denominator) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (sklearn's zero_division=0)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def thresholded(
    probabilities: np.ndarray, labels: np.ndarray, thresholds: np.ndarray, label_names: Sequence[str]
) -> dict:
    """Precision, recall and F1 at per-label thresholds: per label, macro (mean over labels) and micro (pooled)."""
    c = counts_at(probabilities, labels, thresholds)
    precision, recall = _ratio(c["tp"], c["tp"] + c["fp"]), _ratio(c["tp"], c["tp"] + c["fn"])
    f1 = _ratio(2 * c["tp"], 2 * c["tp"] + c["fp"] + c["fn"])
    tp, fp, fn = (int(c[key].sum()) for key in ("tp", "fp", "fn"))
    named = lambda values: {name: float(v) for name, v in zip(label_names, values, strict=True)}  # noqa: E731
    return {
        "precision": float(precision.mean()),
        "recall": float(recall.mean()),
        "f1": float(f1.mean()),
        "micro_precision": float(_ratio(tp, tp + fp)),
        "micro_recall": float(_ratio(tp, tp + fn)),
        "micro_f1": float(_ratio(2 * tp, 2 * tp + fp + fn)),
        "per_label": {"precision": named(precision), "recall": named(recall), "f1": named(f1)},
        "thresholds": named(thresholds),
    }


def best_f1_thresholds(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Per label, the probability threshold that maximises F1 on these (validation) predictions.

    Ties go to the highest threshold (fewest positive calls). A label without positives or without
    negatives here keeps 0.5; its index is returned in the second list.
    """
    probabilities = sigmoid(logits)
    labels = np.asarray(labels)
    chosen = np.full(labels.shape[1], THRESHOLD)
    fallback = []
    for j in range(labels.shape[1]):
        if not _scorable(labels[:, j]):
            fallback.append(j)
            continue
        precision, recall, cut = precision_recall_curve(labels[:, j], probabilities[:, j])
        f1 = _ratio(2 * precision[:-1] * recall[:-1], precision[:-1] + recall[:-1])
        best = np.flatnonzero(f1 == f1.max())
        chosen[j] = cut[best[-1]]
    return chosen, fallback


def evaluate(logits: np.ndarray, labels: np.ndarray, label_names: Sequence[str],
             thresholds: np.ndarray | None = None) -> dict:
    """All metrics of one set of predictions, as plain JSON-ready values (None where not computable).

    AUROC and AUPRC per label with macro and micro averages; the BCE loss; precision, recall and F1
    at 0.5 (`at_0.5`, the reference study's) and, when `thresholds` (per label, chosen on
    validation data) are given, at those (`at_validation_thresholds`). The headline `precision`,
    `recall` and `f1` are the macro values at 0.5. Labels without both classes are listed.
    """
    labels = np.asarray(labels).astype(np.int64)
    logits = np.asarray(logits)
    probabilities = sigmoid(logits)
    aurocs, auprcs = per_label_auroc(logits, labels), per_label_auprc(logits, labels)
    optional = lambda v: float(v) if np.isfinite(v) else None  # noqa: E731
    at_half = thresholded(probabilities, labels, np.full(labels.shape[1], THRESHOLD), label_names)
    result = {
        "samples": int(labels.shape[0]),
        "loss": bce_with_logits(logits, labels),
        "macro_auroc": optional(_nanmean(aurocs)),
        "micro_auroc": optional(_micro(roc_auc_score, logits, labels)),
        "auroc": {name: optional(v) for name, v in zip(label_names, aurocs, strict=True)},
        "macro_auprc": optional(_nanmean(auprcs)),
        "micro_auprc": optional(_micro(average_precision_score, logits, labels)),
        "auprc": {name: optional(v) for name, v in zip(label_names, auprcs, strict=True)},
        "positives": {name: int(n) for name, n in zip(label_names, labels.sum(axis=0), strict=True)},
        "precision": at_half["precision"],
        "recall": at_half["recall"],
        "f1": at_half["f1"],
        "at_0.5": at_half,
        "unscorable_labels": [name for name, value in zip(label_names, aurocs, strict=True) if not np.isfinite(value)],
    }
    if thresholds is not None:
        result["at_validation_thresholds"] = thresholded(
            probabilities, labels, np.asarray(thresholds, np.float64), label_names
        )
    return result


def roc_points(logits: np.ndarray, labels: np.ndarray, label_names: Sequence[str]) -> dict[str, dict]:
    """Each scorable label's ROC curve (false and true positive rates) and AUROC, for the report's plots."""
    curves = {}
    for j, name in enumerate(label_names):
        if _scorable(labels[:, j]):
            fpr, tpr, _ = roc_curve(labels[:, j], logits[:, j])
            curves[name] = {"fpr": fpr, "tpr": tpr, "auroc": float(roc_auc_score(labels[:, j], logits[:, j]))}
    return curves
