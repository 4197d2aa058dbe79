"""A study's runs as units: planned in one order, committed atomically, resumed after a SIGKILL."""

from __future__ import annotations

import csv
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT, SMALL_RUN, harness_process, run_harness
from harness.config import BenchmarkConfig, cache_root
from harness.data.datasets import load_dataset
from harness.data.splits import Split
from harness.records.run_directory import RunDirectory
from harness.runtime.registry import resolve_workers
from harness.study import ledger
from harness.study.neighbours import neighbours
from harness.study.runs import plan_runs
from harness.training.loop import BatchMismatch, TrainingData, train_epoch

# Four runs of the null worker, each a second or two: enough to kill the harness with some finished and some not.
STUDY = ["benchmark", "--workers", "null", "--epochs", "2", *SMALL_RUN, "--seeds", "0,1", "--folds", "2",
         "--deterministic", "--bootstrap", "100"]
SLOW_STEPS = {"CXRBENCH_NULL_STEP_SECONDS": "0.05"}
# What the clock measures, different in any two executions of the same study; everything else must be equal.
WALL_CLOCK = {"timings", "memory", "efficiency", "save_seconds", "seconds"}


def splits(count: int) -> tuple[Split, ...]:
    return tuple(Split(np.arange(4), np.arange(4, 6), np.arange(6, 8)) for _ in range(count))


def test_runs_are_planned_worker_by_worker_then_seeds_then_folds():
    planned = plan_runs(resolve_workers("null"), (3, 5), splits(2))
    assert [run.key for run in planned] == ["null/seed3/fold1", "null/seed3/fold2", "null/seed5/fold1",
                                            "null/seed5/fold2"]
    assert [run.pairing for run in planned] == [(3, 0), (3, 1), (5, 0), (5, 1)]
    assert [run.measure_native for run in planned] == [True, False, False, False]
    assert planned[3].describe() == "null (seed 5, fold 2)"
    (lone,) = plan_runs(resolve_workers("null"), (0,), splits(1))
    assert lone.key == "null/run" and lone.training_run.folder == "" and lone.describe() == "null"


def staged(tmp_path: Path, run, rows: int) -> Path:
    staging = tmp_path / "staging" / run.key
    per_run = RunDirectory(staging)
    for epoch in range(1, rows + 1):
        per_run.append_epoch({"worker": run.worker, "seed": run.training_run.seed, "epoch": epoch},
                             f"{run.worker}/{run.training_run.folder or 'run'}")
    per_run.save_array(f"logits/{run.worker}/{run.training_run.folder}/test.npy", np.zeros(2))
    (staging / "worker.log").write_text("log\n")
    return staging


def test_a_committed_run_is_finished_and_epochs_csv_holds_finished_runs_in_the_study_order(tmp_path):
    run_dir = RunDirectory(tmp_path / "run")
    run_dir.path.mkdir()
    planned = plan_runs(resolve_workers("null"), (0, 1), splits(1))
    # The second run finishes first: epochs.csv still lists the runs in the study's order.
    ledger.commit(run_dir, planned[1], staged(tmp_path, planned[1], 2), {"result": {"x": 1}}, planned)
    assert list(ledger.finished(run_dir, planned)) == ["null/seed1"]
    ledger.commit(run_dir, planned[0], staged(tmp_path, planned[0], 1), {"result": {"x": 0}}, planned)
    with open(run_dir.path / "epochs.csv", newline="") as handle:
        assert [(row["seed"], row["epoch"]) for row in csv.DictReader(handle)] == [("0", "1"), ("1", "1"), ("1", "2")]
    assert json.loads((run_dir.path / "runs" / "null" / "seed0.json").read_text())["result"] == {"x": 0}
    assert (run_dir.path / "logits" / "null" / "seed1" / "test.npy").is_file()
    assert (run_dir.path / "workers" / "null" / "seed1.log").read_text() == "log\n"


def test_unfinished_runs_are_set_aside_not_counted(tmp_path):
    run_dir = RunDirectory(tmp_path / "run")
    planned = plan_runs(resolve_workers("null"), (0, 1), splits(1))
    for run in planned:
        staging = ledger.staging_folder(run_dir, run)
        staging.mkdir(parents=True)
        (staging / "worker.log").write_text("half\n")
    assert ledger.discard_unfinished(run_dir) == ["null/seed0", "null/seed1"]
    assert not (run_dir.path / "unfinished").exists()
    (abandoned,) = (run_dir.path / "abandoned").iterdir()
    assert (abandoned / "null" / "seed0" / "worker.log").read_text() == "half\n"  # kept, for the record
    assert ledger.finished(run_dir, planned) == {}


def test_neighbours_are_the_runs_that_overlapped_on_the_same_node():
    executions = {
        "a": {"node_id": "n1", "started": 0, "finished": 10},
        "b": {"node_id": "n1", "started": 5, "finished": 15},
        "c": {"node_id": "n2", "started": 5, "finished": 15},  # same time, other node
        "d": {"node_id": "n1", "started": 10, "finished": 20},  # starts as a ends: no overlap
    }
    assert neighbours(executions) == {"a": ["b"], "b": ["a", "d"], "c": [], "d": ["b"]}


def test_a_run_whose_batches_are_not_the_drivers_is_stopped_at_its_first_batch(null_worker):
    _, client = null_worker
    store = load_dataset("phantom", 32, 0, cache_root(), 40, False)
    indices = np.arange(len(store))
    data = TrainingData(store=store, split=Split(indices[:16], indices[16:20], indices[20:24]), fit_labels=store.labels,
                        first_digests=("0" * 64,))
    settings = BenchmarkConfig(workers="null", image_size=32, batch_size=8).training()
    with pytest.raises(BatchMismatch, match=r"batch 0 of epoch 1 has digest [0-9a-f]{12}, but the study's driver "
                                            r"built 000000000000: this node builds other bytes"):
        train_epoch(client, settings, data, seed=0, epoch=1)


def test_a_saved_config_comes_back_whole_and_a_resume_changes_only_where_it_runs():
    saved = BenchmarkConfig(workers="null", epochs=2, seeds=(0, 1), folds=2, stall_timeout=60.0)
    assert BenchmarkConfig.from_dict(json.loads(json.dumps(saved.to_dict()))) == saved
    given = BenchmarkConfig(runtime="ray", retries=1, epochs=9, stall_timeout=30.0)
    resumed = given.resumed_from(saved.to_dict())
    assert (resumed.runtime, resumed.retries, resumed.stall_timeout) == ("ray", 1, 30.0)
    assert (resumed.epochs, resumed.seeds, resumed.folds, resumed.workers) == (2, (0, 1), 2, "null")
    with pytest.raises(ValueError, match="config: unknown field"):
        BenchmarkConfig.from_dict({**saved.to_dict(), "colour": "blue"})


@pytest.mark.parametrize("flag", [["--retries", "1"], ["--placement", "grouped"], ["--ray-address", "h:1"]])
def test_ray_options_are_refused_without_the_ray_runtime(flag):
    with pytest.raises(ValueError, match=f"{flag[0]}: is for --runtime ray"):
        from harness.cli import build_parser
        from harness.options import from_arguments

        from_arguments(BenchmarkConfig, build_parser().parse_args(["benchmark", *flag]), "benchmark")


def without_wall_clock(value):
    """`value` with every figure the clock measures removed (see WALL_CLOCK)."""
    if isinstance(value, dict):
        return {key: without_wall_clock(item) for key, item in value.items() if key not in WALL_CLOCK}
    if isinstance(value, list):
        return [without_wall_clock(item) for item in value]
    return value


def epoch_rows(run: Path) -> list[dict]:
    clock = {"seconds", "train_images_per_second", "compute_images_per_second", "prediction_images_per_second",
             "first_step_seconds"}
    with open(run / "epochs.csv", newline="") as handle:
        return [{key: value for key, value in row.items() if key not in clock} for row in csv.DictReader(handle)]


def only_run(out: Path) -> Path:
    (run,) = [path for path in out.iterdir() if (path / "run.json").exists()]
    return run


def test_a_study_killed_with_sigkill_and_resumed_equals_an_uninterrupted_one(tmp_path):
    # The uninterrupted study runs meanwhile (only its timings could feel the company, and they are not compared).
    whole = harness_process([*STUDY, "--out", str(tmp_path / "whole")], REPO_ROOT, SLOW_STEPS)
    out = tmp_path / "killed"
    process = harness_process([*STUDY, "--out", str(out)], REPO_ROOT, SLOW_STEPS)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # two of the four runs finished, the third under way
            records = list(out.glob("*/runs/null/*/*.json"))
            if len(records) >= 2 and list(out.glob("*/unfinished/null/*/*/epochs.csv")):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the study never got two runs in")
        os.kill(process.pid, signal.SIGKILL)  # no clean-up at all
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    _, stderr = whole.communicate(timeout=300)
    assert whole.returncode == 0, stderr
    run = only_run(out)
    finished_before = {path.relative_to(run / "runs").with_suffix("").as_posix()
                       for path in (run / "runs").rglob("*.json")}
    records_before = {key: (run / "runs" / f"{key}.json").read_bytes() for key in finished_before}
    assert 2 <= len(finished_before) < 4 and json.loads((run / "run.json").read_text())["status"] == "running"

    resumed = run_harness(["benchmark", "--resume", str(run)], REPO_ROOT, SLOW_STEPS)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: {len(finished_before)} of 4 runs finished, {4 - len(finished_before)} to run" in resumed.stdout
    record = json.loads((run / "run.json").read_text())
    (resumption,) = record["resumptions"]
    assert record["status"] == "completed" and resumption["previous_status"] == "running"
    # Only the unfinished runs ran again: the finished runs' records are the very bytes they were.
    assert set(resumption["finished_before"]) == {f"null/{key.partition('/')[2]}" for key in finished_before}
    assert len(resumption["redone"]) == 4 - len(finished_before) and resumption["abandoned"]
    assert all((run / "runs" / f"{key}.json").read_bytes() == data for key, data in records_before.items())

    reference = only_run(tmp_path / "whole")
    for name in ("metrics.json", "significance.json", "parity.json"):
        ours, theirs = (json.loads((folder / name).read_text()) for folder in (run, reference))
        assert without_wall_clock(ours) == without_wall_clock(theirs), name
    assert epoch_rows(run) == epoch_rows(reference)
    for logits in sorted((reference / "logits").rglob("*.npy")):
        assert np.array_equal(np.load(logits), np.load(run / logits.relative_to(reference))), logits


def test_resume_refuses_a_study_whose_data_changed(tmp_path):
    cache = tmp_path / "cache"  # a pixel store of its own, to corrupt
    out = tmp_path / "results"
    environment = {"CXRBENCH_CACHE": str(cache), **SLOW_STEPS}
    process = harness_process([*STUDY, "--out", str(out)], REPO_ROOT, environment)
    try:
        deadline = time.monotonic() + 240
        while not list(out.glob("*/runs/null/*/*.json")):
            assert time.monotonic() < deadline, "no run finished"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    (pixels,) = cache.glob("stores/*/pixels.u8")
    with open(pixels, "r+b") as handle:  # one byte of one image
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    refused = run_harness(["benchmark", "--resume", str(only_run(out))], REPO_ROOT, environment)
    assert refused.returncode == 2
    assert "--resume: refusing to resume" in refused.stderr and "the data differ: the pixel store" in refused.stderr
    assert not list(only_run(out).glob("abandoned"))  # refused before anything was touched


def test_resume_refuses_a_completed_study(cpu_null_run):
    _, run = cpu_null_run
    refused = run_harness(["benchmark", "--resume", str(run)], REPO_ROOT)
    assert refused.returncode == 2 and "completed already; nothing to resume" in refused.stderr
