"""The run directory, `results/<run-id>/`: everything a run produces, written as it happens.

    run.json        config, provenance, dataset and split facts, worker metadata, status; under "runs",
                    where and when each finished run executed and its attempts
    runs/<worker>/<run>.json   each finished run's record (results, execution, attempts), written last
                    when it is committed (harness.study.ledger): its presence is what "finished" means
    epochs.csv      one row per worker, run and epoch of every finished run, in the study's order
    epochs/<worker>/<run>.csv   the same rows, one file per worker and run (fold, seed), like Keras's CSVLogger
    unfinished/<worker>/<run>/  a run while it runs on this machine (its rows, logits and worker log,
                    flushed as each epoch ends); left as it was by a failure, set aside under
                    abandoned/ by --resume
    labels/         indices, labels, sample and patient ids of each part of the split
    logits/<worker>/[seed<s>/][fold<k>/]validation_epoch_NNN.npy, test.npy   (seed and fold folders with several)
    metrics.json    all metrics, computed by harness.evaluation.metrics from the saved logits; beside "workers",
                    "churn" and "time_to_target" (harness.evaluation.agreement, .time_to_target)
    significance.json   confidence intervals and paired tests between workers (harness.evaluation.statistics)
    cams/<worker>/[seed<s>/][fold<k>/]test.npz, validation.npz   with --localize: each run's class activation
                    maps of the boxed images, computed by the harness (harness.training.localize)
    localization/boxes.npy, gallery.npz   the boxes scored against, and the gallery's test images
    localization.json   the maps scored against the boxes, intervals and comparisons (harness.report.localization)
    report.md, report.html, plots/   the report, rebuilt from the files above by `harness report`
    workers/<worker>.log   the output of the worker process that probed parity
    workers/<worker>/<run>.log   that of each run's worker process

<worker> in a path is the worker's label in its safe form (cxrbench_worker.worker_labels): `keras` or
`keras@3.14.0` as written, `keras-jax` for the variant keras[jax]; JSON and CSV keep the label itself.

Nothing already written is ever removed: when a run fails, run.json says so and why.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import numpy as np

from cxrbench_worker.worker_labels import safe_label

EPOCH_COLUMNS = (
    "worker", "seed", "fold", "epoch", "learning_rate", "train_loss", "validation_loss", "validation_macro_auroc",
    "checkpoint", "next_learning_rate", "stopped_early", "seconds", "train_images_per_second",
    "compute_images_per_second", "prediction_images_per_second", "first_step_seconds", "batch_order_sha256",
)


def write_json_atomically(path: Path, data: dict) -> None:
    """Write `data` as JSON to `path` through a temporary file, so a reader never sees half of it."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(temporary, path)


class RunDirectory:
    """Creates and fills one run's directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, out: Path, name: str) -> RunDirectory:
        """A new, empty run directory under `out` (a numeric suffix avoids collisions)."""
        out.mkdir(parents=True, exist_ok=True)
        stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"
        for attempt in range(1000):
            path = out / (stem if attempt == 0 else f"{stem}-{attempt}")
            try:
                path.mkdir()
                return cls(path)
            except FileExistsError:
                continue
        raise RuntimeError(f"{out}: could not create a new run directory named {stem}")

    def write_run(self, data: dict) -> None:
        """Write (or rewrite) run.json atomically."""
        write_json_atomically(self.path / "run.json", data)

    def read_run(self) -> dict:
        return json.loads((self.path / "run.json").read_text())

    def write_metrics(self, data: dict) -> None:
        write_json_atomically(self.path / "metrics.json", data)

    def write_significance(self, data: dict) -> None:
        write_json_atomically(self.path / "significance.json", data)

    def read_significance(self) -> dict | None:
        path = self.path / "significance.json"
        return json.loads(path.read_text()) if path.exists() else None

    def write_parity(self, summary: dict) -> None:
        """parity.json: the parity summary so far (rewritten as each worker is probed)."""
        write_json_atomically(self.path / "parity.json", summary)

    def read_parity(self) -> dict | None:
        path = self.path / "parity.json"
        return json.loads(path.read_text()) if path.exists() else None

    def write_samples(self, parts: dict) -> None:
        """labels/samples.json: sample and patient ids of each part, in the order logits are saved."""
        path = self.path / "labels" / "samples.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically(path, parts)

    def append_epoch(self, row: dict, run: str) -> None:
        """Append one row to epochs.csv and to epochs/<run>.csv, each flushed to disk at once."""
        for path in (self.path / "epochs.csv", self.path / "epochs" / f"{run}.csv"):
            path.parent.mkdir(parents=True, exist_ok=True)
            new = not path.exists()
            with open(path, "a", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=EPOCH_COLUMNS)
                if new:
                    writer.writeheader()
                writer.writerow({key: row.get(key, "") for key in EPOCH_COLUMNS})
                handle.flush()
                os.fsync(handle.fileno())

    def read_epochs(self) -> list[dict]:
        path = self.path / "epochs.csv"
        if not path.exists():
            return []
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))

    def save_array(self, relative: str, array: np.ndarray) -> Path:
        """Save one array as .npy under the run directory."""
        path = self.path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, array)
        return path

    def worker_log(self, worker: str) -> Path:
        """workers/<worker>.log, the worker in its safe form (workers/keras-jax.log for keras[jax])."""
        return self.path / "workers" / f"{safe_label(worker)}.log"
