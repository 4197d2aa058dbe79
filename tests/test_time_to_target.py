"""Time to target on epoch rows where the first crossing and the seconds to it can be read off by eye."""

from __future__ import annotations

import math

import pytest

from harness.evaluation.time_to_target import (
    RunCurve,
    first_reach,
    run_best,
    study_target,
    time_to_target,
    worker_best,
)


def curve(aurocs: list[float], seconds: list[float], seed: int = 0, fold: int | None = None) -> RunCurve:
    return RunCurve(seed, fold, aurocs, seconds)


def test_first_reach_is_the_first_epoch_at_or_above_the_target_with_seconds_summed_through_it():
    run = curve([0.55, 0.70, 0.60, 0.80], [10.0, 20.0, 30.0, 40.0])
    assert first_reach(run, 0.70) == (2, 30.0)  # equal to the target counts; 10 + 20 s
    assert first_reach(run, 0.65) == (2, 30.0)  # the dip at epoch 3 does not matter
    assert first_reach(run, 0.75) == (4, 100.0)
    assert first_reach(run, 0.50) == (1, 10.0)


def test_a_run_that_never_reaches_the_target_gets_none():
    assert first_reach(curve([0.55, 0.60], [10.0, 10.0]), 0.61) == (None, None)
    assert first_reach(curve([], []), 0.5) == (None, None)  # no epoch records at all
    assert first_reach(curve([0.9], [1.0]), None) == (None, None)  # no target could be set


def test_an_epoch_without_a_validation_auroc_does_not_reach_the_target_but_its_seconds_count():
    assert first_reach(curve([math.nan, 0.8], [5.0, 7.0]), 0.7) == (2, 12.0)
    assert run_best(curve([math.nan, 0.8, 0.6], [1.0, 1.0, 1.0])) == 0.8
    assert run_best(curve([math.nan], [1.0])) is None


def test_a_worker_best_is_the_mean_over_runs_of_each_runs_maximum_over_epochs():
    runs = [curve([0.6, 0.8, 0.7], [1, 1, 1], seed=0), curve([0.9, 0.5], [1, 1], seed=1)]
    assert worker_best(runs) == pytest.approx((0.8 + 0.9) / 2)


def test_the_target_is_95_percent_of_the_lowest_workers_best():
    assert study_target({"keras": 0.80, "pytorch": 0.60, "tensorflow": 0.70}) == (pytest.approx(0.57), "pytorch")
    assert study_target({"keras": 0.80, "pytorch": None}) == (pytest.approx(0.76), "keras")  # none recorded: left out
    assert study_target({"keras": None}) == (None, None)
    assert study_target({"keras": 0.80}, fraction=0.5) == (pytest.approx(0.40), "keras")


def test_time_to_target_per_worker_median_range_and_count_over_the_runs_that_reached_it():
    # pytorch's best: mean(0.80, 0.60) = 0.70; keras's: mean(0.90, 0.84) = 0.87. Target: 0.95 x 0.70 = 0.665.
    result = time_to_target({
        "keras": [curve([0.70, 0.90], [10.0, 10.0], seed=0), curve([0.60, 0.84], [12.0, 12.0], seed=1)],
        "pytorch": [curve([0.50, 0.66, 0.80], [5.0, 5.0, 5.0], seed=0), curve([0.55, 0.60], [5.0, 5.0], seed=1)],
    })
    assert result["target"] == pytest.approx(0.665)
    assert result["lowest_worker"] == "pytorch" and result["fraction"] == 0.95
    assert "95% of the lowest worker's best validation macro AUROC" in result["rule"]
    assert result["best_validation_macro_auroc"] == {"keras": pytest.approx(0.87), "pytorch": pytest.approx(0.70)}
    keras, pytorch = result["workers"]["keras"], result["workers"]["pytorch"]
    assert keras["per_run"] == [{"seed": 0, "fold": None, "epoch": 1, "seconds": 10.0},
                                {"seed": 1, "fold": None, "epoch": 2, "seconds": 24.0}]
    assert (keras["reached"], keras["runs"]) == (2, 2)
    assert keras["epochs"] == {"median": 1.5, "min": 1.0, "max": 2.0, "n": 2}
    assert keras["seconds"] == {"median": 17.0, "min": 10.0, "max": 24.0, "n": 2}
    # pytorch's first run crosses at epoch 3 (0.66 < 0.665); its second never does.
    assert pytorch["per_run"] == [{"seed": 0, "fold": None, "epoch": 3, "seconds": 15.0},
                                  {"seed": 1, "fold": None, "epoch": None, "seconds": None}]
    assert (pytorch["reached"], pytorch["runs"]) == (1, 2)
    assert pytorch["epochs"] == {"median": 3.0, "min": 3.0, "max": 3.0, "n": 1}


def test_a_worker_without_epoch_records_reaches_nothing_and_sets_no_target():
    # Any worker with records has a run at or above its mean of maxima, hence above the target; only a
    # worker without a scored epoch can reach nothing. It is left out of the target's choice.
    result = time_to_target({"a": [curve([], [])], "b": [curve([0.5, 0.6], [1.0, 1.0])]}, fraction=1.0)
    assert result["target"] == 0.6 and result["lowest_worker"] == "b"
    assert result["workers"]["b"]["per_run"][0]["epoch"] == 2  # 0.6 equals the target
    a = result["workers"]["a"]
    assert (a["reached"], a["runs"]) == (0, 1) and a["epochs"]["median"] is None and a["seconds"]["n"] == 0
    none = time_to_target({"a": [curve([math.nan], [1.0])]})
    assert none["target"] is None and none["lowest_worker"] is None and none["workers"]["a"]["reached"] == 0


def test_a_curve_with_unequal_lengths_is_refused_naming_the_run():
    with pytest.raises(ValueError, match=r"run \(seed 3, fold 2\): 2 validation AUROCs but 1 epoch times"):
        RunCurve(3, 2, [0.5, 0.6], [1.0])
