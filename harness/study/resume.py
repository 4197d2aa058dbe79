"""`--resume RUN_DIR`: finish an interrupted study in its own run directory, only if nothing changed.

The study's settings are read from its run.json (BenchmarkConfig.resumed_from: only where it runs
may change, the runtime and its options); the data digest (recomputed from the pixel store's bytes),
the split, the project's commit and each worker environment's lock must be what the finished runs
had, or the resumption is refused
before any training. The runs without a finished record are then run, and the report is the one an
uninterrupted study would have written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.data.pixel_store import PixelStore, content_digest
from harness.data.split_plan import SplitPlan
from harness.records.provenance import git_state
from harness.records.run_directory import RunDirectory
from harness.runtime.base import Runtime
from harness.runtime.local import LocalRuntime
from harness.runtime.registry import WorkerSpec


class ResumeRefused(ValueError):
    """The run directory cannot be resumed as it is (exit status 2): it says what differs."""


def check_directory(path: Path) -> RunDirectory:
    """The run directory to resume; ResumeRefused unless it holds a study that did not complete."""
    if not (path / "run.json").is_file():
        raise ResumeRefused(f"--resume: {path} is not a run directory (no run.json)")
    run = RunDirectory(path)
    status = run.read_run().get("status")
    if status == "completed":
        raise ResumeRefused(f"--resume: {path} completed already; nothing to resume")
    return run


def _problems(record: dict, store: PixelStore, plan: SplitPlan, runtime: Runtime, workers: list[WorkerSpec],
              run: RunDirectory) -> list[str]:
    problems = []
    recorded = record["data"]["content_sha256"]
    recomputed = content_digest(store)
    if recomputed != recorded:
        problems.append(f"the data differ: the pixel store {store.path} hashes to {recomputed[:16]} now, "
                        f"{recorded[:16]} when the study started")
    for number, split in enumerate(plan.splits, start=1):
        folder = f"labels/fold{number}" if plan.cross_validated else "labels"
        for part, indices in split.parts().items():
            saved = run.path / folder / f"{part}_indices.npy"
            if not saved.is_file() or not np.array_equal(np.load(saved), indices):
                problems.append(f"the {part} split ({folder}) differs from the saved one")
    then, now = record["provenance"]["git"], git_state()
    if then.get("commit") != now.get("commit"):
        problems.append(f"the code differs: commit {now.get('commit')} now, {then.get('commit')} when the study "
                        "started (check out that commit to resume)")
    for spec in workers:
        before = record.get("workers", {}).get(spec.label, {}).get("environment", {}).get("lock_sha256")
        after = runtime.lock_sha256(spec) if isinstance(runtime, LocalRuntime) else None  # docker, remote: no lock here
        if before is not None and after is not None and before != after:
            problems.append(f"{spec.label}'s environment differs: lock {after[:16]} now, {before[:16]} when the "
                            "study started")
    return problems


def check_unchanged(record: dict, store: PixelStore, plan: SplitPlan, runtime: Runtime, workers: list[WorkerSpec],
                    run: RunDirectory) -> None:
    """ResumeRefused naming each difference in data, split, code or environments; nothing when equal."""
    problems = _problems(record, store, plan, runtime, workers, run)
    if problems:
        raise ResumeRefused(f"--resume: refusing to resume {run.path}, the finished runs were made under other "
                            "conditions:\n" + "\n".join(f"  {problem}" for problem in problems))
