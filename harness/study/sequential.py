"""The sequential executor: a study's runs one after another on this machine, each alone on it."""

from __future__ import annotations

import shutil
from functools import partial

from harness.data.pixel_store import PixelStore
from harness.records.run_directory import RunDirectory
from harness.runtime.base import Runtime
from harness.runtime.registry import WorkerSpec
from harness.study.executor import OnFinished, OnStarted
from harness.study.ledger import staging_folder
from harness.study.runs import PlannedRun, StudyInputs, execute_run


class SequentialExecutor:
    """Runs each run in turn through the study's runtime (local, docker or remote); the first failure
    ends the study, with every finished run kept (finish it with --resume)."""

    name = "sequential"

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._store: PixelStore | None = None
        self.facts: dict = {}

    def prepare(self, workers: list[WorkerSpec], store: PixelStore) -> None:
        """The runtime is prepared already (by the preflight); the runs read the driver's store."""
        self._store = store

    def execute(self, runs: list[PlannedRun], inputs: StudyInputs, run_dir: RunDirectory, on_started: OnStarted,
                on_finished: OnFinished) -> None:
        """Run `runs` in order. A run that fails leaves its files in its staging folder, as they were."""
        store = self._store
        assert store is not None, "prepare() first"
        for run in runs:
            staging = staging_folder(run_dir, run)
            shutil.rmtree(staging, ignore_errors=True)
            outcome = execute_run(run, inputs, store, self._runtime, staging,
                                  started=partial(on_started, run))
            on_finished(run, staging, {**outcome, "attempts": [{"attempt": 1, "outcome": "finished"}]})

    def close(self) -> None:
        """Nothing to release."""
