"""What an executor is: it takes a study's pending runs and executes them, reporting each as it finishes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from harness.data.pixel_store import PixelStore
from harness.records.run_directory import RunDirectory
from harness.runtime.registry import WorkerSpec
from harness.study.runs import PlannedRun, StudyInputs

# Called in the driver as each run finishes: (run, the staging folder holding its files,
# {"result": ..., "execution": ..., "attempts": [...]}). It commits the run (harness.study.ledger).
OnFinished = Callable[[PlannedRun, Path, dict], None]
# Called in the driver when a run's worker is up: (run, {"host", "worker_pid", ...}), for run.json.
OnStarted = Callable[[PlannedRun, dict], None]


class StudyFailed(RuntimeError):
    """A run could not finish in its allowed attempts: the study ended, its finished runs kept.

    `runs` holds, for each run that did not finish, its attempts (the failed run's, and those of the
    runs stopped in flight), for run.json."""

    def __init__(self, message: str, runs: dict[str, list[dict]]) -> None:
        super().__init__(message)
        self.runs = runs


class Executor(Protocol):
    """Executes runs: `sequential` (one after another here) or `ray` (spread over a cluster)."""

    name: str
    facts: dict  # what run.json records about the executor (for Ray: the nodes, the reservation per run)

    def prepare(self, workers: list[WorkerSpec], store: PixelStore) -> None:
        """Before the run directory exists: everything the runs need of where they execute (for Ray:
        the cluster joined, every node checked and its environments built); raises with what is wrong."""

    def execute(self, runs: list[PlannedRun], inputs: StudyInputs, run_dir: RunDirectory, on_started: OnStarted,
                on_finished: OnFinished) -> None:
        """Execute every run, calling `on_started` and `on_finished` in this thread as each starts and
        finishes; raises when one cannot finish (the runs finished by then have been reported)."""

    def close(self) -> None:
        """Release what the executor holds (actors, a Ray it started); nothing of it may outlive this."""
