"""The metrics module against independent computations written here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.metrics import bce_with_logits, evaluate, macro_auroc, per_label_auroc, sigmoid


def rank_sum_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney U / (n_pos * n_neg), with ties counted one half."""
    positives, negatives = scores[labels == 1], scores[labels == 0]
    wins = (positives[:, None] > negatives[None, :]).sum() + 0.5 * (positives[:, None] == negatives[None, :]).sum()
    return wins / (len(positives) * len(negatives))


def test_auroc_matches_the_rank_sum_formula():
    rng = np.random.default_rng(0)
    labels = (rng.random((300, 14)) < 0.2).astype(int)
    logits = rng.normal(size=(300, 14)) + labels * np.linspace(0, 2, 14)
    logits[:50, 0] = 0.0  # ties
    scores = per_label_auroc(logits, labels)
    for j in range(14):
        assert scores[j] == pytest.approx(rank_sum_auroc(logits[:, j], labels[:, j]), abs=1e-12)
    assert macro_auroc(logits, labels) == pytest.approx(np.mean([rank_sum_auroc(logits[:, j], labels[:, j]) for j in range(14)]))


def test_label_with_one_class_is_unscorable_and_left_out_of_the_mean():
    labels = np.array([[1, 0], [0, 0], [1, 0]])
    logits = np.array([[2.0, 0.1], [-1.0, 0.2], [1.0, 0.3]])
    scores = per_label_auroc(logits, labels)
    assert scores[0] == 1.0 and math.isnan(scores[1])
    result = evaluate(logits, labels, ("A", "B"))
    assert result["macro_auroc"] == 1.0
    assert result["unscorable_labels"] == ["B"]
    assert result["auroc"]["B"] is None


def test_bce_matches_the_textbook_formula_and_is_stable():
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=3, size=(50, 14))
    labels = (rng.random((50, 14)) < 0.3).astype(int)
    p = 1 / (1 + np.exp(-logits))
    expected = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    assert bce_with_logits(logits, labels) == pytest.approx(expected, rel=1e-12)
    assert bce_with_logits(np.array([[1000.0, -1000.0]]), np.array([[1, 0]])) == pytest.approx(0.0, abs=1e-12)
    assert sigmoid(np.array([-1000.0]))[0] == 0.0


def test_precision_recall_f1_at_half_are_label_averaged():
    labels = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    logits = np.array([[1.0, -1.0], [-1.0, 1.0], [1.0, 1.0], [-1.0, -1.0]])  # >= 0 means predicted positive
    result = evaluate(logits, labels, ("A", "B"))
    # A: TP 1, FP 1, FN 1 -> P 0.5, R 0.5, F1 0.5. B: TP 2, FP 0, FN 0 -> 1, 1, 1.
    assert result["precision"] == pytest.approx(0.75)
    assert result["recall"] == pytest.approx(0.75)
    assert result["f1"] == pytest.approx(0.75)
    assert result["positives"] == {"A": 2, "B": 2}
