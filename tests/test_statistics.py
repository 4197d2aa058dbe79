"""Bootstrap, Holm, intervals and the worker comparison against sklearn and slow references
written here (DeLong has its own file, tests/test_delong.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, roc_auc_score

from harness.evaluation.bootstrap import patient_bootstrap_weights, weighted_auroc_auprc
from harness.report.verdicts import verdicts
from harness.evaluation.statistics import ALPHA, compare_workers, holm, paired_bootstrap_p, paired_run_tests, percentile_interval


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


def test_paired_bootstrap_p_counts_the_far_side_of_zero():
    differences = np.array([1.0] * 97 + [-1.0] * 2 + [np.nan])  # B = 99, two on the far side
    assert paired_bootstrap_p(differences) == pytest.approx(2 * (1 + 2) / 100)
    assert paired_bootstrap_p(-differences) == pytest.approx(2 * (1 + 2) / 100)
    assert paired_bootstrap_p(np.ones(999)) == pytest.approx(2 / 1000)
    assert paired_bootstrap_p(np.zeros(50)) == 1.0
    assert math.isnan(paired_bootstrap_p(np.array([np.nan])))


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


def test_compare_workers_calls_a_far_better_worker_significant():
    patient_ids, labels, noise = small_test_set()
    good = [(4 * labels + noise).astype(np.float32)]
    poor = [np.random.default_rng(9).normal(size=labels.shape).astype(np.float32)]
    report = compare_workers({"good": good, "poor": poor}, labels, patient_ids, LABELS, resamples=200, seed=0)
    (pair,) = report["macro_auroc_pairs"]
    assert (pair["a"], pair["b"]) == ("good", "poor")
    assert pair["difference"] > 0.3 and pair["low"] > 0
    assert pair["p"] == pytest.approx(2 / 201) and pair["significant"] is True
    assert all(row["significant"] for row in report["label_pairs"])


def test_compare_workers_finds_identical_workers_not_different():
    patient_ids, labels, noise = small_test_set()
    run = (labels + noise).astype(np.float32)
    report = compare_workers({"a": [run], "b": [run.copy()]}, labels, patient_ids, LABELS, resamples=100)
    (pair,) = report["macro_auroc_pairs"]
    assert (pair["difference"], pair["low"], pair["high"], pair["p_holm"], pair["significant"]) == (0, 0, 0, 1, False)
    outcomes = [(row["difference"], row["p_holm"], row["significant"]) for row in report["label_pairs"]]
    assert outcomes == [(0, 1, False)] * 3


def test_compare_workers_report_shape_and_json():
    patient_ids, labels, noise = small_test_set()
    labels[:, 2] = 0  # Hernia has no positive: unscorable, reported as None
    runs = {name: [(k * labels + noise + 0.1 * r).astype(np.float32) for r in range(2)] for k, name in enumerate("xyz")}
    report = compare_workers(runs, labels, patient_ids, LABELS, resamples=50, seed=3, level=0.9)
    assert list(report) == ["resamples", "level", "alpha", "unit", "patients", "images", "workers",
                            "macro_auroc_pairs", "label_pairs", "notes"]  # fmt: skip
    assert (report["resamples"], report["level"], report["alpha"], report["unit"]) == (50, 0.9, ALPHA, "patient")
    assert (report["patients"], report["images"]) == (len(np.unique(patient_ids)), 600)
    assert [(p["a"], p["b"]) for p in report["macro_auroc_pairs"]] == [("x", "y"), ("x", "z"), ("y", "z")]
    assert len(report["label_pairs"]) == 3 * 3
    worker = report["workers"]["y"]
    assert worker["runs"] == 2 and set(worker) == {"runs", "macro_auroc", "macro_auprc", "auroc", "auprc"}
    assert set(worker["auroc"]) == set(LABELS) and set(worker["auroc"]["Mass"]) == {"estimate", "low", "high"}
    assert worker["auroc"]["Hernia"] == {"estimate": None, "low": None, "high": None}
    hernia = [row for row in report["label_pairs"] if row["label"] == "Hernia"]
    assert len(hernia) == 3 and all(row["p"] is None and row["significant"] is False for row in hernia)
    assert all(isinstance(note, str) and note for note in report["notes"])
    json.dumps(report, allow_nan=False)


def test_compare_workers_estimates_are_full_set_run_means_and_intervals_come_from_the_shared_weights():
    patient_ids, labels, noise = small_test_set(1)
    runs = [(labels + noise * scale).astype(np.float32) for scale in (1.0, 1.5)]
    report = compare_workers({"only": runs}, labels, patient_ids, LABELS, resamples=120, seed=11)
    assert report["macro_auroc_pairs"] == [] and report["label_pairs"] == []
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


def test_paired_run_test_matches_the_t_distribution_with_two_degrees_of_freedom():
    # Differences 0.1, 0.2, 0.3: mean 0.2, sd 0.1, t = 0.2 / (0.1 / sqrt 3); with 2 degrees of
    # freedom the two-sided p is 1 - t / sqrt(2 + t^2) in closed form.
    (pair,) = paired_run_tests({"a": [0.8, 0.9, 1.0], "b": [0.7, 0.7, 0.7]})
    t = 0.2 / (0.1 / math.sqrt(3))
    assert pair["difference"] == pytest.approx(0.2, abs=1e-12) and pair["sd"] == pytest.approx(0.1, abs=1e-12)
    assert pair["t"] == pytest.approx(t, abs=1e-9)
    assert pair["p"] == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-9)
    assert pair["p_holm"] == pair["p"] and pair["significant"] is False  # p 0.074


def test_paired_run_test_needs_three_runs_and_holm_spans_the_pairs():
    (two,) = paired_run_tests({"a": [0.8, 0.9], "b": [0.7, 0.7]})
    assert two["p"] is None and two["significant"] is False
    pairs = paired_run_tests({"a": [0.9, 0.91, 0.92, 0.93], "b": [0.7, 0.72, 0.71, 0.70], "c": [0.9, 0.92, 0.91, 0.93]})
    assert [(p["a"], p["b"]) for p in pairs] == [("a", "b"), ("a", "c"), ("b", "c")]
    assert pairs[0]["significant"] and not pairs[1]["significant"] and pairs[2]["significant"]
    raw = [p["p"] for p in pairs]
    assert [p["p_holm"] for p in pairs] == pytest.approx(list(holm(raw)))


def test_verdicts_say_when_a_single_run_cannot_see_training_noise():
    significance = {"level": 0.95, "macro_auroc_pairs": [{"a": "a", "b": "b", "estimate_a": 0.9, "estimate_b": 0.8,
                    "difference": 0.1, "low": 0.05, "high": 0.15, "p_holm": 0.002, "significant": True}],
                    "label_pairs": [], "run_pairs": [{"a": "a", "b": "b", "runs": 1, "difference": 0.1, "sd": None,
                                                      "t": None, "p": None, "p_holm": None, "significant": False}]}
    lines = verdicts(significance)
    assert lines[0].startswith("a vs b: macro AUROC 0.900 vs 0.800, difference +0.100 (95% CI +0.050 to +0.150): **significant**")
    assert lines[-1].startswith("Caution: one run per worker")
    significance["run_pairs"] = paired_run_tests({"a": [0.9, 0.91, 0.92], "b": [0.7, 0.72, 0.71]})
    assert verdicts(significance)[-1].startswith("a vs b over 3 paired runs (same seed and fold): mean difference +0.200")
    assert "**larger than run-to-run noise**" in verdicts(significance)[-1]
