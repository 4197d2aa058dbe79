"""Every run measures the harness's ceiling before training, records it, and flags in the report a
worker whose end-to-end throughput comes within 80% of it ("harness-bound"); one clearly below is not.

The null worker's steps sleep CXRBENCH_NULL_STEP_SECONDS, in every null worker the run starts (the
ceiling's too): the run's worker then trains as fast as the ceiling was measured, whatever the load
of the machine. `--option null.step_seconds` slows the run's worker alone (0.1 s a step: half the ceiling).
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import REPO_ROOT, SMALL_RUN, run_harness
from harness.report.sections import efficiency_table, harness_bound

# Steps long enough that the sleep, not the load of the machine, sets both rates.
STEP = {"CXRBENCH_NULL_STEP_SECONDS": "0.05"}


def null_run(out: Path, *extra: str) -> tuple[dict, str]:
    result = run_harness(["benchmark", "--workers", "null", "--bootstrap", "0",
                          "--data-threads", "2", "--out", str(out), *SMALL_RUN, *extra], REPO_ROOT, STEP)
    assert result.returncode == 0, result.stderr
    assert "harness ceiling: " in result.stdout
    (run,) = out.iterdir()
    return json.loads((run / "run.json").read_text()), (run / "report.md").read_text()


def test_a_worker_at_the_ceiling_is_flagged_harness_bound_in_the_report(tmp_path):
    record, report = null_run(tmp_path / "results", "--epochs", "3")  # the median of 3 epochs is the one flagged
    ceiling = record["harness_ceiling"]
    assert ceiling["batch_size"] == 8 and ceiling["image_size"] == 32 and ceiling["threads"] == 2
    assert ceiling["augmentation"] == "flip,rotate=20" and ceiling["batches"] >= 3
    assert ceiling["images_per_second"] > 0
    assert "started by the run's runtime (local)" in ceiling["worker"]
    assert record["config"]["data_threads"] == 2
    assert "Harness ceiling: " in report
    assert "**harness-bound**" in report
    efficiency = report.split("**Table 2: efficiency**")[1]
    row = next(line for line in efficiency.splitlines() if line.startswith("| null |"))
    assert row.split(" | ")[3].endswith("**harness-bound**")  # the end-to-end train img/s cell, after the framework


def test_a_worker_well_below_the_ceiling_is_not_flagged(tmp_path):
    record, report = null_run(tmp_path / "results", "--epochs", "1", "--option", "null.step_seconds=0.1")
    assert record["harness_ceiling"]["images_per_second"] > 0
    assert "Harness ceiling: " in report
    assert "harness-bound" not in report


def test_the_flag_starts_at_80_percent_of_the_ceiling():
    ceiling = {"images_per_second": 1000.0, "batches": 200, "batch_size": 8, "image_size": 32,
               "augmentation": "none", "threads": 2, "worker": "the null worker"}
    spread = {"n": 1, "min": 0, "max": 0}
    assert harness_bound({"train_images_per_second": {**spread, "median": 800.0}}, ceiling)
    assert not harness_bound({"train_images_per_second": {**spread, "median": 799.0}}, ceiling)
    assert not harness_bound({"train_images_per_second": {**spread, "median": 5000.0}}, None)  # an older run
    metrics = {"w": {"efficiency": {key: {**spread, "median": 900.0} for key in (
        "seconds_per_epoch", "train_images_per_second", "compute_images_per_second", "first_step_seconds",
        "prediction_images_per_second")}, "parameters": {"trainable": 1, "non_trainable": 0},
        "model_size_bytes": {"neutral_safetensors": 10}}}
    lines = efficiency_table(metrics, ceiling)
    assert any(line.startswith("Harness ceiling: 1,000 img/s") for line in lines)
    assert any(line.startswith("**harness-bound** (w): end-to-end training throughput at least 80%") for line in lines)
