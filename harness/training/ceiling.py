"""The harness's own ceiling, measured in every run before training: how fast it can feed any worker.

Training batches of the run's image size, batch size and augmentation, built on the run's
batch-building threads exactly as in training, stream to the null worker, which decodes them,
checks their digests and does nothing else. No worker can train faster than this end to end; one
that comes close is waiting for the harness, and the report says so ("harness-bound").
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from cxrbench.worker.v1 import worker_pb2
from harness.data.augmentation import AugmentedPixels
from harness.data.batches import epoch_order, training_batches, training_chunks
from harness.progress import announce
from harness.runtime.base import Runtime
from harness.runtime.client import WorkerClient
from harness.runtime.environments import ensure_environment
from harness.runtime.local import LocalWorker
from harness.runtime.registry import WorkerSpec, discover_workers
from harness.training.settings import TrainingSettings, configure_request

MAX_BATCHES = 500  # a few hundred: about 0.4 s at the default 48 px; SECONDS stops larger images first
SECONDS = 2.0  # stop sending after this long (with at least MIN_BATCHES sent): every run pays it
MIN_BATCHES = 3  # the first is left out as warm-up; two more give a rate
# Training epochs count from 1: epoch 0's order and augmentation are the ceiling's own, and the same
# amount of work as any epoch's.
CEILING_EPOCH = 0


def _until(batches: Iterator[worker_pb2.Batch], seconds: float, least: int) -> Iterator[worker_pb2.Batch]:
    """`batches` until `seconds` have passed since the first was taken, but at least `least` of them."""
    deadline = None
    for sent, batch in enumerate(batches):
        now = time.perf_counter()
        deadline = deadline or now + seconds
        if sent >= least and now > deadline:
            return
        yield batch


@contextmanager
def _null_worker(runtime: Runtime, log_path: Path, cache: Path) -> Iterator[tuple[WorkerClient, str]]:
    """The null worker, started the way the local runtime starts every worker (a process on a Unix
    socket). Switches that slow a null worker down for tests (CXRBENCH_NULL_STEP_SECONDS) are not for
    this one: it must only decode and check, or the ceiling would be the switch's."""
    spec = WorkerSpec(discover_workers()["null"])
    quiet = {"CXRBENCH_NULL_STEP_SECONDS": "0"}
    with LocalWorker(spec.folder, ensure_environment(spec.folder, cache), log_path, extra_env=quiet) as worker:
        if runtime.name == "local":
            yield worker.start(), "the null worker, started as the local runtime starts every worker"
        else:
            yield worker.start(), (f"the null worker, started locally: the {runtime.name} runtime has none, so the "
                                   "figure is this host's harness feeding a worker on this host")


def measure_ceiling(runtime: Runtime, settings: TrainingSettings, pixels: np.ndarray, labels: np.ndarray,
                    train: np.ndarray, log_path: Path, cache: Path) -> dict:
    """Stream up to MAX_BATCHES training batches (about SECONDS) to the null worker; the record for run.json.

    `pixels` is the run's store, `labels` its training labels, `train` the training indices; the
    order repeats them when one pass is shorter than the measurement. Images per second leave out
    the first batch (the stream's start), as the training loop's throughput does.
    """
    batch_size = settings.batch_size
    order = np.resize(epoch_order(train, settings.seed, CEILING_EPOCH), MAX_BATCHES * batch_size)
    chunks = training_chunks(order, batch_size)
    augmented = AugmentedPixels(pixels, settings.augmentation, settings.seed, CEILING_EPOCH)
    # No --option switches: they are for the run's workers (the null worker computes nothing at any precision).
    request = configure_request(dataclasses.replace(settings, options={}), labels.shape[1])
    with _null_worker(runtime, log_path, cache) as (client, started_by):
        client.configure(request)
        batches = training_batches(augmented, labels, chunks, settings.data_threads)
        steps, first, start = 0, None, time.perf_counter()
        try:
            for _ in client.train(_until(batches, SECONDS, MIN_BATCHES)):
                steps += 1
                first = first or time.perf_counter()
        finally:
            batches.close()
        end = time.perf_counter()
    steady_seconds = end - (first or end)
    rate = (steps - 1) * batch_size / steady_seconds if steps > 1 and steady_seconds > 0 else None
    record = {
        "images_per_second": rate,
        "batches": steps,
        "batch_size": batch_size,
        "image_size": int(pixels.shape[1]),
        "augmentation": settings.augmentation.spec,
        "threads": settings.data_threads,
        "seconds": end - start,
        "worker": started_by,
        "method": (f"{steps} training batches of the run's size and augmentation, built on "
                   f"{settings.data_threads} thread(s) as in training, streamed to the null worker (which decodes "
                   "them and checks their digests, nothing else); the first batch is left out"),
    }
    announce(f"harness ceiling: {'n/a' if rate is None else f'{rate:,.0f}'} img/s ({steps} batches of {batch_size} "
             f"at {record['image_size']} px to the null worker, {settings.data_threads} data thread(s))")
    return record
