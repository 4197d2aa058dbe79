"""The verdict is calibrated: in simulated A/A studies with this project's measured training and
test-set noise it calls at most 5% of them "different" (issue 14, point 5), and it finds large
planted differences. The tables themselves: benchmarks/verdict_calibration.py, docs/STATISTICS.md."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.verdict_calibration import (
    NOISES,
    RUNS,
    false_positive_table,
    noise_from_significance,
    power_table,
    reference_noise,
    simulate,
)
from harness.config import BENCHMARK_DEFAULTS
from harness.data.datasets.phantom import PhantomConfig

STUDIES = 2000
TOLERANCE = 2 * math.sqrt(0.05 * 0.95 / STUDIES)  # two Monte-Carlo standard errors at 5%


@pytest.fixture(scope="module")
def noise():
    return reference_noise()


def test_the_reference_noise_was_measured_on_the_default_recipe(noise):
    # Renew reference/training_noise.json whenever the default recipe changes (its docstring says how).
    phantom, defaults = PhantomConfig(), BENCHMARK_DEFAULTS
    recipe = (f"phantom of {phantom.patients} patients at conspicuity {phantom.conspicuity:g}, "
              f"{defaults['architecture']}, {defaults['image_size']} px, {defaults['epochs']} epochs, "
              f"Adam lr {defaults['learning_rate']}, seeds 0,1,2, folds 1")
    assert recipe in noise.source, noise.source
    assert len(noise.label_run_sd) >= 10
    assert 0 < noise.macro_test_sd < 0.1 and 0 < noise.macro_run_sd < 0.2


def test_a_a_false_positive_rate_is_at_most_five_percent_for_3_5_and_10_runs(noise):
    rows = false_positive_table(noise, STUDIES)
    assert {(row["noise"], row["runs"]) for row in rows} == {(kind, runs) for kind in NOISES for runs in RUNS}
    for row in rows:
        assert row["macro"] <= 0.05 + TOLERANCE, row
        assert row["per_label"] <= 0.05 + TOLERANCE, row
        assert row["any_label"] <= 0.05 + TOLERANCE, row  # Holm over the labels keeps the family's rate too


def test_the_old_welch_satterthwaite_df_would_fail_the_a_a_check(noise, monkeypatch):
    # The check has teeth: degrees of freedom that grow with the test set's share of the variance
    # (Welch-Satterthwaite) call noise "different" too often with 3 runs when that share is large.
    import harness.evaluation.comparison as comparison

    def satterthwaite(run_variance, runs, test_variance, fold_ratio):
        with np.errstate(divide="ignore", invalid="ignore"):
            runs = np.asarray(runs, dtype=np.float64)
            training = (1.0 / runs + fold_ratio) * run_variance
            se = np.sqrt(training + test_variance)
            return se, np.where(training == 0.0, np.inf, se**4 / (training**2 / (runs - 1.0)))

    monkeypatch.setattr(comparison, "_se_df", satterthwaite)
    verdict = simulate(np.array([0.03]), np.array([0.005]), 3, 0.0, STUDIES, "normal", seed=1)
    assert (verdict == "different").mean() > 0.05 + TOLERANCE


def test_planted_differences_are_found_more_often_with_more_runs(noise):
    rows = power_table(noise, 1000)
    large = [row[0.05] for row in rows]
    assert [row["runs"] for row in rows] == [3, 5, 10, 20, 30]
    assert large == sorted(large) and large[-1] > 0.5


def test_a_planted_difference_larger_than_the_margin_is_called_different_and_none_is_called_equivalent():
    verdict = simulate(np.array([0.004]), np.array([0.002]), 5, 0.03, 500, "normal", seed=2)
    assert (verdict == "different").mean() > 0.95
    verdict = simulate(np.array([0.004]), np.array([0.001]), 5, 0.0, 500, "normal", seed=3)
    assert (verdict == "equivalent").mean() > 0.9 and (verdict == "different").mean() < 0.05


def test_noise_is_read_from_a_runs_significance():
    pair = {"runs": 3, "run_sd": 0.03, "test_sd": 0.01}
    significance = {"comparison": {"macro": [pair, {**pair, "run_sd": 0.04}],
                                   "labels": [{"label": "A", **pair}, {"label": "A", **pair, "test_sd": 0.02},
                                              {"label": "B", "runs": 3, "run_sd": None, "test_sd": None}]}}
    noise = noise_from_significance(significance, "run")
    assert noise.macro_run_sd == pytest.approx(math.sqrt((0.03**2 + 0.04**2) / 2))
    assert noise.label_test_sd == pytest.approx([math.sqrt((0.01**2 + 0.02**2) / 2)])  # B unscorable: left out
    with pytest.raises(ValueError, match="3 or more paired runs"):
        noise_from_significance({"comparison": {"macro": [{**pair, "runs": 1}], "labels": []}}, "one run")
