"""The verdict's arithmetic on known cases: paired t and TOST against scipy, the fold correction by
hand, the shared test-set variance, Holm, and the one-run regression (issue 14's 793dcf5 case)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from harness.evaluation.comparison import decide, pair_statistics, paired_tests, runs_needed, verdicts
from harness.evaluation.statistics import _shared_test_variance, compare_workers
from harness.report.significance import fold_ratio
from harness.report.verdicts import comparison_lines, pair_verdict

DIFFERENCES = np.array([0.031, 0.012, 0.024, 0.040, 0.018])


def test_without_test_set_noise_the_verdict_is_scipys_paired_t_test():
    result = pair_statistics(DIFFERENCES, test_variance=0.0)
    reference = stats.ttest_1samp(DIFFERENCES, 0.0)
    interval = reference.confidence_interval(0.95)
    assert result["p"] == pytest.approx(reference.pvalue, rel=1e-10)
    assert (result["low"], result["high"]) == pytest.approx((interval.low, interval.high), rel=1e-10)
    assert result["df"] == pytest.approx(4) and result["se"] == pytest.approx(stats.sem(DIFFERENCES), rel=1e-12)


def test_equivalence_is_two_one_sided_t_tests_at_the_margin():
    small = DIFFERENCES - 0.025  # mean +0.0
    result = pair_statistics(small, test_variance=0.0, margin=0.02)
    lower = stats.ttest_1samp(small, -0.02, alternative="greater").pvalue
    upper = stats.ttest_1samp(small, 0.02, alternative="less").pvalue
    assert result["p_equivalence"] == pytest.approx(2 * max(lower, upper), rel=1e-10)
    # p_equivalence < 0.05 exactly when the 95% interval lies inside the margin.
    assert (result["p_equivalence"] < 0.05) == (-0.02 < result["low"] and result["high"] < 0.02)


def test_the_test_sets_variance_adds_to_the_training_noise_on_runs_minus_one_df():
    v = 0.0001
    result = pair_statistics(DIFFERENCES, test_variance=v)
    training = DIFFERENCES.var(ddof=1) / 5
    se = math.sqrt(training + v)
    df = 4  # the run-to-run variance's: conservative when the test set adds variance (not Welch-Satterthwaite)
    assert result["se"] == pytest.approx(se, rel=1e-12) and result["df"] == df
    t = DIFFERENCES.mean() / se
    assert result["p"] == pytest.approx(2 * stats.t.sf(t, df), rel=1e-10)
    assert result["high"] - result["low"] == pytest.approx(2 * stats.t.ppf(0.975, df) * se, rel=1e-10)


def test_folds_apply_the_nadeau_bengio_correction_known_answer():
    # 3 seeds x 3 folds = 9 paired runs; each fold validates on 1/3 of the training patients and trains
    # on 2/3, so n_validation / n_train = 0.5. Corrected resampled t (Bouckaert & Frank 2004):
    # t = mean / sqrt((1/9 + 0.5) s^2), 8 degrees of freedom. Here mean 0.02, s 0.01:
    spread = np.array([1, -1, 1, -1, 1, -1, 1, -1, 0], dtype=np.float64)
    d = 0.02 + spread * 0.01 / spread.std(ddof=1)
    assert (d.mean(), d.std(ddof=1)) == pytest.approx((0.02, 0.01))
    corrected = pair_statistics(d, test_variance=0.0, fold_ratio=0.5)
    t = 0.02 / math.sqrt((1 / 9 + 0.5) * 0.01**2)  # = 2.5584...
    assert t == pytest.approx(2.55841, rel=1e-5)
    assert corrected["p"] == pytest.approx(2 * stats.t.sf(t, 8), rel=1e-9)
    assert corrected["p"] == pytest.approx(0.03373, abs=1e-5)
    plain = pair_statistics(d, test_variance=0.0)  # the uncorrected test would overstate it: t = 6.0
    assert plain["p"] == pytest.approx(2 * stats.t.sf(6.0, 8), rel=1e-9) and plain["p"] < corrected["p"] / 50


def test_three_seeds_by_three_folds_through_compare_workers_use_the_corrected_variance():
    # --seeds 0,1,2 --folds 3: nine runs per worker keyed (seed, fold); the pair's se must be
    # sqrt((1/9 + ratio) s^2 + v_test) with 8 degrees of freedom.
    rng = np.random.default_rng(8)
    patients = np.repeat(np.arange(150), 2)
    labels = (rng.random((300, 2)) < 0.3).astype(np.uint8)
    keys = [(seed, fold) for seed in (0, 1, 2) for fold in (1, 2, 3)]
    a = [labels * 1.5 + rng.normal(size=labels.shape) for _ in keys]
    b = [labels * 1.0 + rng.normal(size=labels.shape) for _ in keys]
    result = compare_workers({"a": a, "b": b}, labels, patients, ["x", "y"], resamples=200, run_keys=keys,
                             fold_ratio=0.5)
    (pair,) = result["comparison"]["macro"]
    d = np.array(pair["differences"])
    assert result["comparison"]["fold_correction"] == {"folds": 3, "ratio": 0.5}
    assert pair["runs"] == 9 and pair["df"] == 8
    assert pair["se"] == pytest.approx(math.sqrt((1 / 9 + 0.5) * d.var(ddof=1) + pair["test_sd"] ** 2), rel=1e-9)
    plain = compare_workers({"a": a, "b": b}, labels, patients, ["x", "y"], resamples=200, run_keys=keys)
    assert plain["comparison"]["macro"][0]["se"] < pair["se"]  # without the correction: overconfident


def test_fold_ratio_reads_the_folds_training_and_validation_images():
    data = {"folds": [{"train": {"images": 200}, "validation": {"images": 100}},
                      {"train": {"images": 210}, "validation": {"images": 90}},
                      {"train": {"images": 190}, "validation": {"images": 110}}]}
    assert fold_ratio(data) == pytest.approx(np.mean([100 / 200, 90 / 210, 110 / 190]))
    assert fold_ratio({"split": {}}) == 0.0


def test_the_shared_test_variance_is_the_mean_covariance_between_runs():
    rng = np.random.default_rng(0)
    shared = rng.normal(size=4000)
    same = np.stack([shared, shared, shared])  # every run moved by the same test-set draw
    assert _shared_test_variance(same) == pytest.approx(shared.var(ddof=1), rel=1e-12)
    independent = rng.normal(size=(3, 4000))  # nothing in common: nothing that runs cannot average away
    assert _shared_test_variance(independent) == pytest.approx(0.0, abs=0.05)
    assert _shared_test_variance(shared[None, :]) == pytest.approx(shared.var(ddof=1))  # one run: all of it


def test_one_run_per_worker_is_never_different_the_793dcf5_case():
    # Issue 14: keras 0.862 vs pytorch 0.762 from one run each, the test-set interval +0.084 to +0.117
    # far from 0, was printed "significant (Holm-adjusted p 0.006); keras is better". It is training noise.
    rng = np.random.default_rng(5)
    patients = np.repeat(np.arange(500), 2)
    labels = (rng.random((1000, 14)) < 0.15).astype(np.uint8)
    keras = [labels * 1.6 + rng.normal(size=labels.shape)]
    pytorch = [labels * 1.0 + rng.normal(size=labels.shape)]
    names = [f"label{j}" for j in range(14)]
    result = compare_workers({"keras": keras, "pytorch": pytorch}, labels, patients, names, resamples=300)
    (pair,) = result["comparison"]["macro"]
    assert pair["difference"] > 0.08 and pair["test_low"] > 0.05  # the test set alone would call it
    assert pair["verdict"] == "undetermined" and pair["p_holm"] is None
    assert all(row["verdict"] == "undetermined" for row in result["comparison"]["labels"])
    text = " ".join(comparison_lines(result)).lower()
    assert "significant" not in text and "better" not in text and "different**" not in text
    assert "one run per worker cannot separate the framework from training noise" in text
    assert "--seeds 0,1,2" in text


def test_bit_identical_workers_with_three_runs_are_equivalent_and_a_large_planted_gap_is_different():
    identical = paired_tests(np.zeros((1, 3)), np.zeros(1))
    assert verdicts(identical["runs"], identical["p"], identical["p_equivalence"])[0] == "equivalent"
    gap = pair_statistics([0.031, 0.029, 0.030], test_variance=0.002**2, margin=0.01)
    (decided,) = decide([gap], [0.002**2], 0.0)
    assert decided["verdict"] == "different" and decided["low"] > 0.01  # larger than the margin
    assert "**different**: b lower by 0.030" in pair_verdict({"a": "a", "b": "b", "mean_a": 0.8, "mean_b": 0.77,
                                                              **decided}, 0.95, 0.01)


def test_holm_runs_over_the_family_and_undetermined_pairs_get_a_number_of_runs():
    rows = [pair_statistics(d, 0.0) for d in ([0.05, 0.06, 0.04], [0.01, -0.02, 0.03], [0.02, 0.021, 0.019])]
    decided = decide(rows, [0.0, 0.0, 0.0], 0.0)
    raw = sorted(row["p"] for row in rows)
    assert sorted(row["p_holm"] for row in decided)[0] == pytest.approx(min(1, 3 * raw[0]))
    undetermined = [row for row in decided if row["verdict"] == "undetermined"]
    assert undetermined and all(row["runs_needed"] is None or row["runs_needed"] > 3 for row in undetermined)
    needed, note = runs_needed(rows[1], 0.0, 0.0, 0.95, 0.01, family=3)
    assert needed is None or needed > 3
    assert note


def test_runs_needed_says_when_the_test_set_is_the_limit():
    pair = pair_statistics([0.004, 0.006, 0.005], test_variance=0.01**2)
    needed, note = runs_needed(pair, 0.01**2, 0.0, 0.95, 0.01)
    assert needed is None and "a larger test set" in note
    assert "sampling noise keeps the standard error" in note  # the sentence is printed: its grammar counts
    one = pair_statistics([0.1], test_variance=0.0001)
    assert runs_needed(one, 0.0001, 0.0, 0.95, 0.01)[0] == 3
