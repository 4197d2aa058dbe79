"""The metrics module against independent computations written here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.evaluation.metrics import best_f1_thresholds, bce_with_logits, evaluate, macro_auroc, per_label_auroc, roc_points, sigmoid


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


def stepwise_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision from its definition: at each distinct score, from the highest down, the
    precision of everything at or above it, weighted by the share of positives it adds."""
    total, value = labels.sum(), 0.0
    for cut in np.unique(scores)[::-1]:
        called = scores >= cut
        added = labels[scores == cut].sum()
        value += added / total * labels[called].sum() / called.sum()
    return value


def counted(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    tp, fp, fn = (predicted & truth).sum(), (predicted & ~truth).sum(), (~predicted & truth).sum()
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return precision, recall, (2 * precision * recall / (precision + recall) if precision + recall else 0.0)


@pytest.fixture(scope="module")
def predictions():
    rng = np.random.default_rng(7)
    labels = (rng.random((400, 5)) < [0.05, 0.1, 0.2, 0.3, 0.5]).astype(int)
    logits = np.round(rng.normal(size=(400, 5)) + labels * 1.5, 1)  # rounded: many ties
    return logits, labels


def test_auprc_matches_the_stepwise_definition_with_ties(predictions):
    logits, labels = predictions
    result = evaluate(logits, labels, tuple("ABCDE"))
    for j, name in enumerate("ABCDE"):
        assert result["auprc"][name] == pytest.approx(stepwise_average_precision(logits[:, j], labels[:, j]), abs=1e-12)
    assert result["macro_auprc"] == pytest.approx(np.mean([result["auprc"][n] for n in "ABCDE"]), abs=1e-12)
    assert result["micro_auprc"] == pytest.approx(stepwise_average_precision(logits.ravel(), labels.ravel()), abs=1e-12)


def test_micro_auroc_pools_every_image_label_pair(predictions):
    logits, labels = predictions
    result = evaluate(logits, labels, tuple("ABCDE"))
    assert result["micro_auroc"] == pytest.approx(rank_sum_auroc(logits.ravel(), labels.ravel()), abs=1e-12)


def test_precision_recall_f1_per_label_macro_and_micro_from_counts(predictions):
    logits, labels = predictions
    result = evaluate(logits, labels, tuple("ABCDE"))
    called, truth = 1 / (1 + np.exp(-logits)) >= 0.5, labels == 1
    per_label = [counted(called[:, j], truth[:, j]) for j in range(5)]
    for j, name in enumerate("ABCDE"):
        assert result["at_0.5"]["per_label"]["precision"][name] == pytest.approx(per_label[j][0], abs=1e-12)
        assert result["at_0.5"]["per_label"]["recall"][name] == pytest.approx(per_label[j][1], abs=1e-12)
        assert result["at_0.5"]["per_label"]["f1"][name] == pytest.approx(per_label[j][2], abs=1e-12)
    assert result["f1"] == pytest.approx(np.mean([p[2] for p in per_label]), abs=1e-12)
    micro = counted(called.ravel(), truth.ravel())
    assert (result["at_0.5"]["micro_precision"], result["at_0.5"]["micro_recall"], result["at_0.5"]["micro_f1"]) == pytest.approx(micro, abs=1e-12)


def test_validation_thresholds_maximise_f1_and_are_applied_to_the_test_set(predictions):
    logits, labels = predictions
    validation, test = slice(0, 200), slice(200, 400)
    chosen, fallback = best_f1_thresholds(logits[validation], labels[validation])
    probabilities = 1 / (1 + np.exp(-logits))
    assert fallback == []
    for j in range(5):
        # Brute force: every distinct validation probability as a cut; the best F1, highest cut on ties.
        cuts = np.unique(probabilities[validation, j])
        f1s = [counted(probabilities[validation, j] >= c, labels[validation, j] == 1)[2] for c in cuts]
        best = max(f1s)
        assert chosen[j] == pytest.approx(max(c for c, f in zip(cuts, f1s) if f >= best - 1e-15), abs=1e-12)
    result = evaluate(logits[test], labels[test], tuple("ABCDE"), thresholds=chosen)
    tuned = result["at_validation_thresholds"]
    for j, name in enumerate("ABCDE"):
        expected = counted(probabilities[test, j] >= chosen[j], labels[test, j] == 1)
        assert tuned["per_label"]["f1"][name] == pytest.approx(expected[2], abs=1e-12)
        assert tuned["thresholds"][name] == pytest.approx(chosen[j], abs=1e-12)


def test_a_label_without_validation_positives_keeps_the_half_threshold():
    labels = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    logits = np.array([[2.0, 3.0], [-1.0, 1.0], [1.0, -2.0], [0.5, 0.0]])
    chosen, fallback = best_f1_thresholds(logits, labels)
    assert fallback == [1] and chosen[1] == 0.5
    assert chosen[0] == pytest.approx(1 / (1 + np.exp(-1.0)))  # the lowest positive's probability: F1 = 1


def test_roc_points_end_at_the_corners_and_carry_the_auroc(predictions):
    logits, labels = predictions
    curves = roc_points(logits, labels, tuple("ABCDE"))
    for j, name in enumerate("ABCDE"):
        curve = curves[name]
        assert curve["fpr"][0] == 0 and curve["tpr"][-1] == 1 and curve["fpr"][-1] == 1
        assert np.trapezoid(curve["tpr"], curve["fpr"]) == pytest.approx(curve["auroc"], abs=1e-12)
        assert curve["auroc"] == pytest.approx(rank_sum_auroc(logits[:, j], labels[:, j]), abs=1e-12)
