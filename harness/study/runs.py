"""The run as the unit of a study: what one (worker, seed, fold) run is, what it needs, how it executes.

A run starts its own worker process, configures it for its seed, loads its starting weights, trains
under the harness's schedule and is evaluated; everything it writes goes to a staging folder that
`harness.study.ledger` commits into the run directory only once the run has finished. The same
function runs a run on this machine (the sequential executor) and inside a Ray actor on a cluster node.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.data.augmentation import AugmentedPixels
from harness.data.batches import epoch_order, training_batches, training_chunks
from harness.data.pixel_store import PixelStore
from harness.data.splits import Split
from harness.records.run_directory import RunDirectory
from harness.runtime.base import Runtime
from harness.runtime.registry import WorkerSpec
from harness.training.loop import TrainingData, TrainingRun, train_and_evaluate
from harness.training.settings import TrainingSettings, configure_request

FIRST_DIGESTS = 2  # epoch 1's first batches, built by the driver, that every run must echo
# Thread variables a worker process would inherit: passed on as the driver has them, so that a Ray
# actor's (Ray sets OMP_NUM_THREADS to its CPU count) never decide a worker's threads.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                    "TF_NUM_INTEROP_THREADS", "XLA_FLAGS")


@dataclass(frozen=True)
class PlannedRun:
    """One run of a study: a worker trained from one seed's starting weights on one fold."""

    spec: WorkerSpec
    training_run: TrainingRun
    fold_index: int  # its split's position in the plan (0 without folds)
    measure_native: bool  # also export the framework's own format to weigh it (each worker's first run)

    @property
    def worker(self) -> str:
        return self.spec.label

    @property
    def key(self) -> str:
        """Its name in the run directory: "pytorch/run", "pytorch/seed1/fold2", "keras-jax/run" (the
        worker's safe label: no brackets in file names)."""
        return f"{self.spec.safe_label}/{self.training_run.folder or 'run'}"

    @property
    def pairing(self) -> tuple[int, int]:
        """(seed, fold index): the runs of every worker that train on the same batches."""
        return self.training_run.seed, self.fold_index

    def describe(self) -> str:
        """For messages: "pytorch (seed 1, fold 2)"."""
        return self.worker + (f" ({self.training_run.name})" if self.training_run.name else "")


def plan_runs(workers: list[WorkerSpec], seeds: tuple[int, ...], splits: tuple[Split, ...]) -> list[PlannedRun]:
    """Every run of the study in its canonical order: worker by worker, then seeds, then folds.

    Results are combined in this order whatever order the runs finish in, so a study gives the same
    metrics whether it ran sequentially, on a cluster, or was resumed.
    """
    cross_validated = len(splits) > 1
    planned = []
    for spec in workers:
        number = 0
        for seed in seeds:
            for index in range(len(splits)):
                fold = index + 1 if cross_validated else None
                folder = "/".join(([f"seed{seed}"] if len(seeds) > 1 else []) + ([f"fold{fold}"] if fold else []))
                planned.append(PlannedRun(spec, TrainingRun(seed, fold, folder), index, measure_native=number == 0))
                number += 1
    return planned


@dataclass(frozen=True)
class StudyInputs:
    """What every run of a study shares: plain values, so a Ray actor on another node receives it whole."""

    store_path: Path  # the pixel store's folder: the same path on every node, checked by digest
    store_sha256: str
    splits: tuple[Split, ...]
    fit_labels: np.ndarray  # training and validation labels (shuffled in the control run)
    starts: dict[int, bytes]  # training seed -> starting weights (neutral safetensors)
    settings: dict[str, TrainingSettings]  # worker label -> its settings
    num_labels: int
    stall_timeout: float
    first_digests: dict[tuple[int, int], tuple[str, ...]]  # (seed, fold index) -> epoch 1's first batch digests
    thread_environment: dict[str, str | None]  # THREAD_VARIABLES as the driver has them


def first_batch_digests(store: PixelStore, split: Split, fit_labels: np.ndarray, settings: TrainingSettings,
                        seed: int, count: int = FIRST_DIGESTS) -> tuple[str, ...]:
    """The digests of epoch 1's first `count` training batches of (seed, split), built as a run builds them."""
    chunks = training_chunks(epoch_order(split.train, seed, 1), settings.batch_size)[:count]
    pixels = AugmentedPixels(store.pixels, settings.augmentation, seed, 1)
    batches = training_batches(pixels, fit_labels, chunks)
    try:
        return tuple(batch.digest for batch in batches)
    finally:
        batches.close()


def driver_thread_environment() -> dict[str, str | None]:
    """THREAD_VARIABLES in this process's environment (None: unset)."""
    return {name: os.environ.get(name) for name in THREAD_VARIABLES}


def apply_thread_environment(values: dict[str, str | None]) -> None:
    """Make this process's thread variables what the driver had, so the worker it starts inherits them."""
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def execute_run(run: PlannedRun, inputs: StudyInputs, store: PixelStore, runtime: Runtime, staging: Path,
                started: Callable[[dict], None] | None = None) -> dict:
    """Run `run` in a worker of its own, writing its files under `staging`; returns
    {"result": what metrics.json keeps, "execution": where and when it ran}.

    `staging` ends up holding logits/<worker>/<run>/, epochs/<worker>/<run>.csv and worker.log.
    `started` is told where the run's worker runs, once it is configured, before any training.
    """
    settings = inputs.settings[run.worker]
    staging.mkdir(parents=True, exist_ok=True)
    began = time.time()
    with runtime.start(run.spec, staging / "worker.log") as worker:
        client = worker.client
        client.stall_timeout = inputs.stall_timeout
        configured = client.configure(configure_request(settings, inputs.num_labels, run.training_run.seed))
        metadata = client.metadata()  # after Configure: threads and numerics as they are used
        run.spec.check_reported(dict(metadata.framework_versions))
        where = {"host": socket.gethostname(), "worker_pid": metadata.pid, "device": metadata.device,
                 "threads": metadata.threads, "staging": str(staging)}
        if started is not None:
            started(where)
        client.set_weights(inputs.starts[run.training_run.seed])
        data = TrainingData(store=store, split=inputs.splits[run.fold_index], fit_labels=inputs.fit_labels,
                            first_digests=inputs.first_digests[run.pairing])
        result = train_and_evaluate(client, settings, data, RunDirectory(staging), configured, run.training_run,
                                    measure_native=run.measure_native)
        execution = {**where, "started": began, "finished": time.time(), **worker.provenance}
        del execution["staging"]
    return {"result": result, "execution": execution}
