"""A worker killed mid-epoch, or a Ctrl-C: the run ends within seconds with a clear error, no
process is left behind, and everything already written is kept."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT, SMALL_RUN, harness_process

# Slow null steps so that a kill lands in the middle of an epoch.
SLOW_STEPS = {"CXRBENCH_NULL_STEP_SECONDS": "0.15"}


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def run_directory(out: Path) -> Path | None:
    runs = [p for p in out.glob("*") if (p / "run.json").exists()] if out.exists() else []
    return runs[0] if runs else None


def staging(run: Path) -> Path:
    """Where the lone run of `--workers null` writes while it runs (harness.study.ledger)."""
    return run / "unfinished" / "null" / "run"


def worker_pid(out: Path) -> int | None:
    """The training run's worker pid, once its first epoch has ended."""
    run = run_directory(out)
    if run is None or not (staging(run) / "epochs.csv").exists():
        return None
    return reported_pid(out)


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes only once reaped; read its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.fixture
def slow_null_run(tmp_path):
    out = tmp_path / "results"
    process = harness_process(
        ["benchmark", "--workers", "null", "--epochs", "20", "--out", str(out), *SMALL_RUN], REPO_ROOT, SLOW_STEPS
    )
    yield process, out
    if process.poll() is None:
        process.kill()


def test_killing_the_worker_mid_epoch_ends_the_run_with_a_clear_error(slow_null_run):
    process, out = slow_null_run
    # Epoch 1 done (epochs.csv written), epoch 2 under way: kill the worker hard.
    pid = wait_for(lambda: worker_pid(out), 120, "the first epoch to finish")
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    stdout, stderr = process.communicate(timeout=30)
    assert time.monotonic() - killed_at < 10, "the harness took too long to notice"
    assert process.returncode == 1
    assert "harness: error: worker 'null', Train: UNAVAILABLE" in stderr
    assert "killed by signal SIGKILL" in stderr
    run = run_directory(out)
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "failed"
    assert "worker 'null', Train" in record["error"]
    # The unfinished run's files are kept where it wrote them (epoch 1 at least; seed 0, no fold), and
    # counted nowhere: epochs.csv holds finished runs only.
    rows = (staging(run) / "epochs.csv").read_text().splitlines()
    assert len(rows) >= 2 and rows[1].startswith("null,0,,1,")
    assert (staging(run) / "logits" / "null" / "validation_epoch_001.npy").exists()
    assert (staging(run) / "worker.log").exists()
    assert not (run / "epochs.csv").exists() and not (run / "runs").exists()
    assert record["runs"]["null/run"]["status"] == "running"  # as it was when the harness stopped it
    assert not process_exists(pid)


def test_ctrl_c_stops_the_worker_and_keeps_what_was_written(slow_null_run):
    process, out = slow_null_run
    pid = wait_for(lambda: worker_pid(out), 120, "the first epoch to finish")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "interrupted" in stderr
    wait_for(lambda: not process_exists(pid), 10, "the worker to exit")
    record = json.loads((run_directory(out) / "run.json").read_text())
    assert record["status"] == "interrupted"
    assert (staging(run_directory(out)) / "epochs.csv").read_text().count("\nnull,0,,1,") == 1


def test_worker_exits_when_the_harness_is_killed(slow_null_run):
    process, out = slow_null_run
    pid = wait_for(lambda: worker_pid(out), 120, "the first epoch to finish")
    process.kill()  # SIGKILL: the harness gets no chance to clean up
    process.wait()
    wait_for(lambda: not process_exists(pid), 10, "the orphaned worker to exit by itself")


def reported_pid(out: Path) -> int | None:
    """The training run's worker pid, as soon as run.json records it (before its first epoch)."""
    run = run_directory(out)
    runs = json.loads((run / "run.json").read_text()).get("runs", {}) if run else {}
    return runs.get("null/run", {}).get("worker_pid")


def test_a_stopped_worker_ends_the_run_as_stalled_and_leaves_no_process(tmp_path):
    out = tmp_path / "results"
    process = harness_process(
        ["benchmark", "--workers", "null", "--epochs", "20", "--stall-timeout", "3", "--out", str(out), *SMALL_RUN],
        REPO_ROOT, {"CXRBENCH_NULL_STEP_SECONDS": "1.0"},
    )
    try:
        pid = wait_for(lambda: reported_pid(out), 120, "the worker to be configured")
        # Weights loaded, epoch 1 streaming (about 7 steps of 1 s). Stopped sooner, in a unary call such as
        # SetWeights, the run would end at that call's 60 s deadline instead: on a loaded machine, 1.5 s
        # after Configure (with 0.2 s steps) once came before the first Train, and the run outlived the test's wait.
        time.sleep(3)
        os.kill(pid, signal.SIGSTOP)
        _, stderr = process.communicate(timeout=60)  # without the watchdog: no end at all
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1
    # Stopped once steps were timed, or (on a loaded machine) before the first step came back.
    assert re.search(r"harness: error: worker 'null', Train: STALLED: no reply for [\d.]+ s \(limit [\d.]+ s = "
                     r"(max\(3 s, 20 x median step [\d.e-]+ s\)\); last batch answered: \d+ |the floor, no step timed "
                     r"yet\); last batch answered: 0 )", stderr)
    record = json.loads((run_directory(out) / "run.json").read_text())
    assert record["status"] == "failed"
    assert record["error"].startswith("worker 'null', Train: STALLED: no reply for ")
    assert not (run_directory(out) / "epochs.csv").exists()  # it stalled in epoch 1
    assert not process_exists(pid)
