"""Bootstrap, Holm, intervals and the worker comparison against sklearn and slow references
written here (the verdicts' arithmetic has its own file, tests/test_comparison.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, roc_auc_score

from harness.evaluation.bootstrap import patient_bootstrap_weights, weighted_auroc_auprc
from harness.evaluation.multiplicity import holm
from harness.evaluation.statistics import ALPHA, compare_workers, percentile_interval


def rank_sum_auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney: (R_pos - m(m+1)/2) / (m n) with midranks."""
    ranks = rankdata(scores)
    m, n = int(positive.sum()), int((1 - positive).sum())
    return (ranks[positive == 1].sum() - m * (m + 1) / 2) / (m * n)


# ---------------------------------------------------------------------------------------------
# Weighted AUROC / AUPRC
# ---------------------------------------------------------------------------------------------


def test_weighted_metrics_equal_sklearn_on_explicitly_repeated_images():
    rng = np.random.default_rng(3)
    labels = (rng.random((90, 3)) < [0.3, 0.5, 0.1]).astype(np.uint8)
    logits = np.round(rng.normal(size=(90, 3)) + labels, 1).astype(np.float32)  # many ties
    weights = rng.integers(0, 4, size=(6, 90)).astype(np.float32)  # zeros drop images
    weights[4, labels[:, 0] == 1] = 0  # replicate 4 has no positive for label 0
    auroc, auprc = weighted_auroc_auprc(logits, labels, weights)
    assert auroc.shape == auprc.shape == (6, 3)
    assert math.isnan(auroc[4, 0]) and math.isnan(auprc[4, 0])
    checked = 0
    for b in range(6):
        repeated = np.repeat(np.arange(90), weights[b].astype(int))
        for j in range(3):
            if (b, j) == (4, 0):
                continue
            y, s = labels[repeated, j], logits[repeated, j]
            assert auroc[b, j] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
            assert auprc[b, j] == pytest.approx(average_precision_score(y, s), abs=1e-9)
            checked += 1
    assert checked == 17


def test_unit_weight_auroc_equals_the_mann_whitney_rank_sum():
    rng = np.random.default_rng(4)
    labels = (rng.random((400, 2)) < 0.2).astype(np.uint8)
    logits = rng.normal(size=(400, 2)) + labels
    logits[:60, 1] = 0.25  # a block of ties across classes
    auroc, _ = weighted_auroc_auprc(logits, labels, np.ones((1, 400)))
    for j in range(2):
        assert auroc[0, j] == pytest.approx(rank_sum_auroc(logits[:, j], labels[:, j]), abs=1e-12)


def test_a_label_with_one_class_is_nan_in_every_replicate():
    auroc, auprc = weighted_auroc_auprc(np.array([0.1, 0.2, 0.3]), np.array([1, 1, 1]), np.ones((2, 3)))
    assert np.isnan(auroc).all() and np.isnan(auprc).all()


def test_labels_other_than_0_and_1_are_refused():
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        weighted_auroc_auprc(np.array([0.1, 0.2]), np.array([0, 2]), np.ones((1, 2)))


# ---------------------------------------------------------------------------------------------
# Holm, intervals, bootstrap p-values
# ---------------------------------------------------------------------------------------------


def test_holm_matches_a_hand_worked_example():
    # Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06 (monotone).
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02], rtol=1e-12)


def test_holm_caps_at_one_and_leaves_nan_out_of_the_family():
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])
    adjusted = holm([0.01, math.nan, 0.04])  # a family of two, not three
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.04)
    assert holm([]).shape == (0,)


def test_percentile_interval_ignores_nan_replicates():
    samples = np.concatenate([np.arange(1001.0), [np.nan] * 50])
    low, high = percentile_interval(samples, level=0.90)
    assert (float(low), float(high)) == (50.0, 950.0)
    columns = np.column_stack([np.arange(101.0), np.full(101, np.nan)])
    low, high = percentile_interval(columns, level=0.5)
    assert low[0] == 25.0 and high[0] == 75.0 and math.isnan(low[1]) and math.isnan(high[1])


# ---------------------------------------------------------------------------------------------
# Patient bootstrap weights
# ---------------------------------------------------------------------------------------------


def patients_with_sizes(sizes: list[int]) -> np.ndarray:
    """Patient ids (shuffled, non-contiguous) for patients with the given numbers of images."""
    ids = np.repeat(np.arange(len(sizes)) * 7 + 100, sizes)
    return np.random.default_rng(0).permutation(ids)


def test_patient_bootstrap_weights_keep_a_patients_images_together():
    patient_ids = patients_with_sizes([1, 5, 2, 9, 1, 3, 4, 1, 1, 6])
    weights = patient_bootstrap_weights(patient_ids, resamples=300, seed=1)
    assert weights.shape == (300, 33) and weights.dtype == np.float32
    for patient in np.unique(patient_ids):
        columns = weights[:, patient_ids == patient]
        assert (columns == columns[:, :1]).all()  # every image of a patient has the same weight
    first_image = np.unique(patient_ids, return_index=True)[1]
    np.testing.assert_array_equal(weights[:, first_image].sum(axis=1), 10)  # P = 10 draws per replicate


def test_patient_bootstrap_rows_sum_to_n_only_on_average():
    patient_ids = patients_with_sizes([1, 5, 2, 9, 1, 3, 4, 1, 1, 6])
    sums = patient_bootstrap_weights(patient_ids, resamples=4000, seed=2).sum(axis=1)
    assert sums.std() > 1  # patients differ in size, so rows do not all sum to N
    assert abs(sums.mean() - 33) < 4 * sums.std() / math.sqrt(4000)


def test_patient_bootstrap_is_deterministic_for_a_seed():
    patient_ids = patients_with_sizes([2, 3, 1, 4])
    first = patient_bootstrap_weights(patient_ids, 50, seed=7)
    np.testing.assert_array_equal(first, patient_bootstrap_weights(patient_ids, 50, seed=7))
    assert not np.array_equal(first, patient_bootstrap_weights(patient_ids, 50, seed=8))


# ---------------------------------------------------------------------------------------------
# compare_workers
# ---------------------------------------------------------------------------------------------

LABELS = ("Effusion", "Mass", "Hernia")


def small_test_set(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(patient ids, labels, noise) for 600 images of 200 patients and 3 labels."""
    rng = np.random.default_rng(seed)
    patient_ids = np.sort(rng.integers(0, 200, 600))
    labels = (rng.random((600, 3)) < [0.3, 0.2, 0.05]).astype(np.uint8)
    return patient_ids, labels, rng.normal(size=(600, 3)).astype(np.float32)


def test_compare_workers_calls_a_far_better_worker_different_once_it_has_runs():
    patient_ids, labels, noise = small_test_set()
    rng = np.random.default_rng(9)
    good = [(4 * labels + noise + 0.3 * rng.normal(size=labels.shape)).astype(np.float32) for _ in range(3)]
    poor = [rng.normal(size=labels.shape).astype(np.float32) for _ in range(3)]
    report = compare_workers({"good": good, "poor": poor}, labels, patient_ids, LABELS, resamples=200, seed=0)
    (pair,) = report["comparison"]["macro"]
    assert (pair["a"], pair["b"], pair["runs"]) == ("good", "poor", 3)
    assert pair["difference"] > 0.3 and pair["low"] > 0 and pair["verdict"] == "different"
    assert all(row["verdict"] == "different" for row in report["comparison"]["labels"])
    one = compare_workers({"good": good[:1], "poor": poor[:1]}, labels, patient_ids, LABELS, resamples=200, seed=0)
    (pair,) = one["comparison"]["macro"]
    assert pair["test_low"] > 0 and pair["verdict"] == "undetermined"  # one run: never different


def test_compare_workers_finds_identical_workers_equivalent():
    patient_ids, labels, noise = small_test_set()
    runs = [(labels + noise * scale).astype(np.float32) for scale in (1.0, 1.2, 1.4)]
    report = compare_workers({"a": runs, "b": [run.copy() for run in runs]}, labels, patient_ids, LABELS,
                             resamples=100)
    (pair,) = report["comparison"]["macro"]
    assert (pair["difference"], pair["low"], pair["high"], pair["p_holm"], pair["verdict"]) == (0, 0, 0, 1, "equivalent")
    assert [row["verdict"] for row in report["comparison"]["labels"]] == ["equivalent"] * 3


def test_compare_workers_report_shape_and_json():
    patient_ids, labels, noise = small_test_set()
    labels[:, 2] = 0  # Hernia has no positive: unscorable, reported as None
    runs = {name: [(k * labels + noise + 0.1 * r).astype(np.float32) for r in range(2)] for k, name in enumerate("xyz")}
    report = compare_workers(runs, labels, patient_ids, LABELS, resamples=50, seed=3, level=0.9)
    assert list(report) == ["resamples", "level", "alpha", "unit", "patients", "images", "workers",
                            "comparison", "notes"]  # fmt: skip
    assert (report["resamples"], report["level"], report["alpha"], report["unit"]) == (50, 0.9, ALPHA, "patient")
    assert (report["patients"], report["images"]) == (len(np.unique(patient_ids)), 600)
    comparison = report["comparison"]
    assert [(p["a"], p["b"]) for p in comparison["macro"]] == [("x", "y"), ("x", "z"), ("y", "z")]
    assert len(comparison["labels"]) == 3 * 3
    assert comparison["workers"]["x"]["runs"] == [{"seed": 0, "fold": None, "macro_auroc": pytest.approx(
        np.mean([roc_auc_score(labels[:, j], noise[:, j]) for j in range(2)]))}, {"seed": 1, "fold": None,
        "macro_auroc": pytest.approx(np.mean([roc_auc_score(labels[:, j], noise[:, j]) for j in range(2)]))}]
    worker = report["workers"]["y"]
    assert worker["runs"] == 2 and set(worker) == {"runs", "macro_auroc", "macro_auprc", "auroc", "auprc"}
    assert set(worker["auroc"]) == set(LABELS) and set(worker["auroc"]["Mass"]) == {"estimate", "low", "high"}
    assert worker["auroc"]["Hernia"] == {"estimate": None, "low": None, "high": None}
    hernia = [row for row in comparison["labels"] if row["label"] == "Hernia"]
    assert len(hernia) == 3 and all(row["p"] is None and row["verdict"] == "undetermined" for row in hernia)
    assert all(isinstance(note, str) and note for note in report["notes"])
    json.dumps(report, allow_nan=False)


def test_compare_workers_estimates_are_full_set_run_means_and_intervals_come_from_the_shared_weights():
    patient_ids, labels, noise = small_test_set(1)
    runs = [(labels + noise * scale).astype(np.float32) for scale in (1.0, 1.5)]
    report = compare_workers({"only": runs}, labels, patient_ids, LABELS, resamples=120, seed=11)
    assert report["comparison"]["macro"] == [] and report["comparison"]["labels"] == []
    weights = patient_bootstrap_weights(patient_ids, 120, seed=11)
    replicates = [weighted_auroc_auprc(run, labels, weights) for run in runs]
    for j, label in enumerate(LABELS):
        entry = report["workers"]["only"]["auroc"][label]
        expected = np.mean([roc_auc_score(labels[:, j], run[:, j]) for run in runs])
        assert entry["estimate"] == pytest.approx(expected, abs=1e-12)
        low, high = percentile_interval(np.mean([r[0][:, j] for r in replicates], axis=0))
        assert (entry["low"], entry["high"]) == pytest.approx((low, high), abs=1e-12)
        entry = report["workers"]["only"]["auprc"][label]
        expected = np.mean([average_precision_score(labels[:, j], run[:, j]) for run in runs])
        assert entry["estimate"] == pytest.approx(expected, abs=1e-12)


def test_compare_workers_refuses_logits_of_the_wrong_shape():
    patient_ids, labels, noise = small_test_set()
    with pytest.raises(ValueError, match="worker 'bad', run 1"):
        compare_workers({"bad": [noise, noise[:, :2]]}, labels, patient_ids, LABELS, resamples=10)
