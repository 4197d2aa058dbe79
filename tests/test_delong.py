"""DeLong's test against pROC's published aSAH example and a slow O(m*n) DeLong written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import ndtr
from sklearn.metrics import roc_auc_score

from harness.evaluation.delong import delong_test

# ---------------------------------------------------------------------------------------------
# The published example: pROC's aSAH data set
# ---------------------------------------------------------------------------------------------
# aSAH: 113 patients with aneurysmal subarachnoid haemorrhage (Turck et al. 2010, Intensive Care
# Medicine 36:107-115), shipped with the R package pROC (Robin et al. 2011, BMC Bioinformatics
# 12:77). outcome "Poor" = 1 (41 cases, 72 controls); s100b is a biomarker, wfns a 1-5 clinical
# grade (heavy ties). Rows in the package's order. The transcription is checked below against
# pROC's own placement values (xrobin/pROC, tests/testthat/helper-deLongPlacementsCpp-expected.R)
# and against every published figure.
ASAH_POOR = [
    0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 1, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0,
    0, 0, 1, 0, 1, 0, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0,
    0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0,
    0,
]  # fmt: skip
ASAH_S100B = [
    0.13, 0.14, 0.10, 0.04, 0.13, 0.10, 0.47, 0.16, 0.18, 0.10, 0.12, 0.10, 0.44, 0.71,
    0.04, 0.08, 0.49, 0.04, 0.07, 0.33, 0.09, 0.09, 0.07, 0.11, 0.07, 0.17, 0.07, 0.11,
    0.13, 0.19, 0.05, 0.16, 0.41, 0.14, 0.34, 0.35, 0.48, 0.09, 0.96, 0.25, 0.50, 0.46,
    0.16, 0.07, 0.43, 0.45, 0.11, 0.08, 0.09, 0.86, 0.52, 0.08, 0.06, 0.13, 2.07, 0.10,
    0.14, 0.15, 0.07, 0.06, 0.77, 0.05, 0.09, 0.30, 0.03, 0.09, 0.04, 0.23, 0.70, 0.09,
    0.27, 0.71, 0.08, 0.26, 0.08, 0.16, 0.09, 0.13, 0.10, 0.08, 0.11, 0.33, 0.11, 0.28,
    0.07, 0.10, 0.32, 0.22, 0.07, 0.05, 0.24, 0.38, 0.10, 0.15, 0.08, 0.14, 0.10, 0.07,
    0.04, 0.19, 0.56, 0.14, 0.58, 0.32, 0.82, 0.74, 0.15, 0.47, 0.17, 0.44, 0.15, 0.50,
    0.48,
]  # fmt: skip
ASAH_WFNS = [
    1, 1, 1, 1, 3, 2, 5, 4, 1, 2, 5, 2, 5, 5, 1, 2, 5, 2, 2, 5, 2, 1, 1, 1, 1, 2, 1, 2,
    1, 1, 3, 4, 2, 1, 4, 5, 4, 1, 4, 2, 5, 5, 1, 1, 2, 4, 1, 1, 2, 5, 5, 2, 1, 2, 5, 1,
    2, 2, 2, 1, 5, 1, 1, 2, 5, 2, 1, 4, 5, 2, 4, 4, 1, 4, 1, 2, 1, 4, 2, 1, 2, 3, 2, 4,
    2, 1, 4, 5, 1, 1, 5, 4, 2, 2, 1, 1, 1, 3, 1, 2, 5, 2, 2, 5, 5, 5, 2, 4, 4, 5, 1, 1,
    1,
]  # fmt: skip
# pROC's expected placements of the first eight cases ("X", i.e. V10), from its test suite.
PROC_S100B_CASE_PLACEMENTS = [0.5625, 0.4375, 0.715277777777778, 0.541666666666667, 0.902777777777778, 1.0,
                              0.972222222222222, 0.180555555555556]  # fmt: skip
PROC_WFNS_CASE_PLACEMENTS = [0.8125, 0.652777777777778, 0.888888888888889, 0.972222222222222,
                             0.972222222222222, 0.972222222222222, 0.972222222222222, 0.652777777777778]  # fmt: skip


def asah() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(poor outcome 0/1, s100b, wfns) as arrays."""
    return np.array(ASAH_POOR), np.array(ASAH_S100B), np.array(ASAH_WFNS, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Slow references, written here without ranks
# ---------------------------------------------------------------------------------------------


def slow_placements(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's V10 (per positive) and V01 (per negative) from the O(m n) kernel psi(X, Y)."""
    x, y = scores[positive == 1], scores[positive == 0]
    psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
    return psi.mean(axis=1), psi.mean(axis=0)


def slow_delong(scores_a: np.ndarray, scores_b: np.ndarray, positive: np.ndarray) -> dict[str, float]:
    """DeLong, DeLong & Clarke-Pearson (1988) for two markers: AUCs, variances, covariance, z."""
    v10_a, v01_a = slow_placements(scores_a, positive)
    v10_b, v01_b = slow_placements(scores_b, positive)
    m, n = len(v10_a), len(v01_a)
    s10, s01 = np.cov(np.vstack([v10_a, v10_b])), np.cov(np.vstack([v01_a, v01_b]))
    covariance = s10 / m + s01 / n
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    z = (v10_a.mean() - v10_b.mean()) / math.sqrt(variance)
    return {"auc_a": v10_a.mean(), "auc_b": v10_b.mean(), "var_a": covariance[0, 0], "var_b": covariance[1, 1],
            "cov": covariance[0, 1], "var_difference": variance, "z": z}  # fmt: skip



# ---------------------------------------------------------------------------------------------
# DeLong
# ---------------------------------------------------------------------------------------------


def test_asah_transcription_gives_procs_own_placement_values():
    poor, s100b, wfns = asah()
    assert (len(poor), int(poor.sum())) == (113, 41)
    np.testing.assert_allclose(slow_placements(s100b, poor)[0][:8], PROC_S100B_CASE_PLACEMENTS, atol=1e-12)
    np.testing.assert_allclose(slow_placements(wfns, poor)[0][:8], PROC_WFNS_CASE_PLACEMENTS, atol=1e-12)


def test_delong_reproduces_the_proc_roc_test_example_s100b_against_wfns():
    """pROC's documentation: roc.test(roc(aSAH$outcome, aSAH$s100b), roc(aSAH$outcome, aSAH$wfns))
    prints "DeLong's test for two correlated ROC curves ... Z = -2.209, p-value = 0.02718 ...
    AUC of roc1 0.7313686, AUC of roc2 0.8236789"."""
    poor, s100b, wfns = asah()
    result = delong_test([s100b], [wfns], poor)
    assert round(float(result["auroc_a"][0]), 7) == 0.7313686
    assert round(float(result["auroc_b"][0]), 7) == 0.8236789
    assert round(float(result["z"][0]), 3) == -2.209
    assert round(float(result["p"][0]), 5) == 0.02718


def test_delong_variance_of_s100b_matches_published_proc_and_stata_figures():
    """StackOverflow 61998034 ("How to get p value after ROC analysis with pRoc package?"): pROC's
    var(roc(aSAH$outcome, aSAH$s100b)) prints 0.002668682, its square root 0.05165929 (Stata's
    roctab agrees), and 2 * pt(-|AUC - 0.5| / se, Inf) prints 0.000007508474. Against a constant
    marker (AUC 0.5, placements all 0.5) the paired test's variance is s100b's own."""
    poor, s100b, _ = asah()
    result = delong_test([s100b], [np.zeros(113)], poor)
    assert round(float(result["standard_error"][0]) ** 2, 9) == 0.002668682
    assert round(float(result["standard_error"][0]), 8) == 0.05165929
    assert float(result["p"][0]) == pytest.approx(7.508474e-06, rel=1e-6)
    assert float(result["difference"][0]) == pytest.approx(0.7313686 - 0.5, abs=1e-7)


@pytest.mark.parametrize("case", ["asah", "rounded_random"])
def test_delong_z_variance_and_covariance_equal_a_slow_pairwise_delong(case):
    if case == "asah":
        poor, a, b = asah()
    else:
        rng = np.random.default_rng(5)
        poor = (rng.random(300) < 0.3).astype(np.uint8)
        a = np.round(poor + rng.normal(size=300), 1)
        b = np.round(0.6 * a + rng.normal(size=300), 1)  # correlated with a, heavy ties
    slow = slow_delong(a, b, poor)
    fast = {key: float(value[0]) for key, value in delong_test([a], [b], poor).items()}
    alone_a = delong_test([a], [np.zeros(len(a))], poor)["standard_error"][0] ** 2
    alone_b = delong_test([b], [np.zeros(len(b))], poor)["standard_error"][0] ** 2
    covariance = (alone_a + alone_b - fast["standard_error"] ** 2) / 2
    assert fast["auroc_a"] == pytest.approx(slow["auc_a"], abs=1e-12)
    assert fast["auroc_b"] == pytest.approx(slow["auc_b"], abs=1e-12)
    assert fast["z"] == pytest.approx(slow["z"], abs=1e-9)
    assert fast["standard_error"] ** 2 == pytest.approx(slow["var_difference"], rel=1e-9)
    assert alone_a == pytest.approx(slow["var_a"], rel=1e-9)
    assert alone_b == pytest.approx(slow["var_b"], rel=1e-9)
    assert covariance == pytest.approx(slow["cov"], rel=1e-9)
    assert fast["p"] == pytest.approx(2 * ndtr(-abs(slow["z"])), rel=1e-9)


def test_delong_with_identical_runs_equals_the_one_run_test():
    poor, s100b, wfns = asah()
    one = delong_test([s100b], [wfns], poor)
    several = delong_test([s100b, s100b, s100b], [wfns, wfns], poor)
    for key in one:
        np.testing.assert_allclose(several[key], one[key], rtol=1e-12, atol=0)


def test_delong_with_several_runs_compares_the_mean_auroc_of_the_runs():
    rng = np.random.default_rng(6)
    labels = (rng.random((250, 2)) < 0.3).astype(np.uint8)
    runs_a = [labels * 1.5 + rng.normal(size=(250, 2)) for _ in range(3)]
    runs_b = [labels * 0.5 + rng.normal(size=(250, 2)) for _ in range(2)]
    result = delong_test(runs_a, runs_b, labels)
    for j in range(2):
        mean_a = np.mean([roc_auc_score(labels[:, j], run[:, j]) for run in runs_a])
        mean_b = np.mean([roc_auc_score(labels[:, j], run[:, j]) for run in runs_b])
        assert result["auroc_a"][j] == pytest.approx(mean_a, abs=1e-12)
        assert result["difference"][j] == pytest.approx(mean_a - mean_b, abs=1e-12)
        assert result["z"][j] > 3  # 1.5 vs 0.5 separation on 250 images


def test_delong_between_identical_workers_gives_zero_difference_and_p_one():
    poor, s100b, _ = asah()
    result = delong_test([s100b], [s100b.copy()], poor)
    assert (result["difference"][0], result["standard_error"][0], result["z"][0], result["p"][0]) == (0, 0, 0, 1)


def test_delong_is_nan_for_a_label_with_one_class():
    labels = np.array([[1, 1], [0, 1], [1, 1], [0, 1]])
    result = delong_test([np.arange(8.0).reshape(4, 2)], [np.ones((4, 2))], labels)
    assert not math.isnan(result["auroc_a"][0])
    assert all(math.isnan(result[key][1]) for key in result)
