"""A study's finished runs in the run directory: committed atomically, read back for `--resume`.

A run's files are written to a staging folder while it runs (`unfinished/<worker>/<run>/` here, or on
the node that ran it); when it finishes they are moved into place and its record written last, to
`runs/<worker>/<run>.json`. That record's presence is what "finished" means: a run killed half-way
leaves only a staging folder, which a resumed study deletes and redoes. epochs.csv is rebuilt from
the finished runs' own files in the study's order, so it never holds rows of an abandoned attempt.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from pathlib import Path

from harness.records.run_directory import EPOCH_COLUMNS, RunDirectory, write_json_atomically
from harness.study.runs import PlannedRun

STAGING = "unfinished"
RUNS = "runs"


def staging_folder(run_dir: RunDirectory, run: PlannedRun) -> Path:
    """Where `run` writes while it runs on this machine."""
    return run_dir.path / STAGING / run.key


def record_path(run_dir: RunDirectory, run: PlannedRun) -> Path:
    return run_dir.path / RUNS / f"{run.key}.json"


def commit(run_dir: RunDirectory, run: PlannedRun, staging: Path, outcome: dict, planned: list[PlannedRun]) -> None:
    """Move a finished run's files from `staging` into the run directory, then write its record.

    `outcome` is execute_run's {"result", "execution"}, with the executor's "attempts" beside them.
    """
    for source in sorted(path for path in staging.rglob("*") if path.is_file()):
        relative = source.relative_to(staging)
        if relative.as_posix() == "epochs.csv":  # the study's epochs.csv is rebuilt below
            continue
        target = (run_dir.path / "workers" / f"{run.key}.log" if relative.as_posix() == "worker.log"
                  else run_dir.path / relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
    path = record_path(run_dir, run)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(path, {"worker": run.worker, "seed": run.training_run.seed, "fold": run.training_run.fold,
                                 **outcome})
    shutil.rmtree(staging, ignore_errors=True)
    _remove_empty_parents(staging, run_dir.path)
    rebuild_epochs(run_dir, planned)


def _remove_empty_parents(folder: Path, root: Path) -> None:
    """Remove `folder`'s empty parents up to, not including, `root` (unfinished/ goes once empty)."""
    for parent in folder.parents:
        if parent == root or root not in parent.parents:
            return
        try:
            parent.rmdir()
        except OSError:  # not empty: another run's staging lives there
            return


def finished(run_dir: RunDirectory, planned: list[PlannedRun]) -> dict[str, dict]:
    """The records of the runs of `planned` that have finished, by run key."""
    records = {}
    for run in planned:
        path = record_path(run_dir, run)
        if path.is_file():
            records[run.key] = json.loads(path.read_text())
    return records


def rebuild_epochs(run_dir: RunDirectory, planned: list[PlannedRun]) -> None:
    """epochs.csv: every finished run's epochs/<worker>/<run>.csv rows, in the study's order."""
    rows: list[dict] = []
    for run in planned:
        per_run = run_dir.path / "epochs" / f"{run.key}.csv"
        if record_path(run_dir, run).is_file() and per_run.is_file():
            with open(per_run, newline="") as handle:
                rows += list(csv.DictReader(handle))
    temporary = run_dir.path / "epochs.csv.tmp"
    with open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=EPOCH_COLUMNS)
        writer.writeheader()
        writer.writerows({key: row.get(key, "") for key in EPOCH_COLUMNS} for row in rows)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, run_dir.path / "epochs.csv")


def discard_unfinished(run_dir: RunDirectory) -> list[str]:
    """Set aside what runs that never finished left (their staging folders, under abandoned/, worker
    logs included, for the record); returns their keys. Their partial rows count nowhere."""
    root = run_dir.path / STAGING
    if not root.exists():
        return []
    left = sorted(str(log.parent.relative_to(root)) for log in root.rglob("worker.log"))
    target = run_dir.path / "abandoned" / time.strftime("%Y%m%d-%H%M%S")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(root, target)
    return left
