"""The harness's own ceiling, measured in every run before training: how fast it can feed any worker.

Training batches of the run's image size, batch size and augmentation, built on the run's
batch-building threads exactly as in training, stream to the null worker, which decodes them,
checks their digests and does nothing else. No worker can train faster than this end to end; one
that comes close is waiting for the harness, and the report says so ("harness-bound").
"""

from __future__ import annotations

import dataclasses
import threading
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
MIN_BATCHES = 3
IN_FLIGHT = 8  # batches sent and not yet answered, at most  # the first is left out as warm-up; two more give a rate
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


class _Window:
    """At most `size` batches sent and not yet answered, so the measurement ends about SECONDS after it
    starts: unpaced, gRPC would queue every batch sent in that time, and a slow worker (a test's) would
    take minutes to answer them. Eight in flight keep the worker as busy as the training stream does."""

    def __init__(self, size: int) -> None:
        self._free = threading.Semaphore(size)
        self._closed = threading.Event()

    def paced(self, batches: Iterator[worker_pb2.Batch]) -> Iterator[worker_pb2.Batch]:
        for batch in batches:
            while not self._free.acquire(timeout=0.1):
                if self._closed.is_set():  # the stream ended: gRPC's sending thread must not wait for ever
                    return
            yield batch

    def answered(self) -> None:
        self._free.release()

    def close(self) -> None:
        self._closed.set()


@contextmanager
def _null_worker(runtime: Runtime, log_path: Path, cache: Path) -> Iterator[tuple[WorkerClient, str]]:
    """The null worker through the run's runtime where it has one (local), else started locally."""
    spec = WorkerSpec(discover_workers()["null"])
    if runtime.name == "local":
        with runtime.start(spec, log_path) as running:
            yield running.client, "the null worker, started by the run's runtime (local)"
        return
    with LocalWorker(spec.folder, ensure_environment(spec.folder, cache), log_path) as worker:
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
        window = _Window(IN_FLIGHT)
        try:
            for _ in client.train(window.paced(_until(batches, SECONDS, MIN_BATCHES))):
                window.answered()
                steps += 1
                first = first or time.perf_counter()
        finally:
            window.close()
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
