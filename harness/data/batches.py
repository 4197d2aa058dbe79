"""Batches: the seeded order of every epoch and the encoded, digested batches sent to workers.

Every worker receives the very same batches in the very same order: the order depends only on
(seed, epoch), the bytes only on the pixel store and the labels, and each batch carries a digest
the worker recomputes.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

from cxrbench.worker.v1 import worker_pb2
from cxrbench.worker.v1.tensors import make_batch
from harness.data.parallel import OrderedBuilds

if TYPE_CHECKING:  # for the annotation only: no OpenCV import here
    from harness.data.augmentation import AugmentedPixels


def epoch_order(indices: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """The training order of `indices` in `epoch`, a permutation fixed by (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch])
    return indices[rng.permutation(len(indices))]


def training_chunks(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Cut an epoch's order into full batches; an incomplete last batch is dropped.

    Dropping it (for every worker alike) avoids a BatchNorm step on a single image, which some
    frameworks refuse and all treat differently.
    """
    full = len(order) // batch_size
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(full)]


def evaluation_chunks(indices: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Cut an evaluated set into batches in index order, keeping every sample."""
    return [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]


def training_batches(
    pixels: np.ndarray | AugmentedPixels, labels: np.ndarray, chunks: list[np.ndarray], threads: int = 1
) -> OrderedBuilds[worker_pb2.Batch]:
    """Encode training batches (pixels and labels) with their digests, built on `threads` threads.

    `pixels[chunk]` is all they read. Batch i depends only on chunks[i], so the batches, their
    digests and their order are the same for any number of threads. Close the result when done early.
    """
    def build(index: int) -> worker_pb2.Batch:
        chunk = chunks[index]
        return make_batch(index, pixels[chunk], labels[chunk])

    return OrderedBuilds(build, len(chunks), threads)


def prediction_batches(
    pixels: np.ndarray, chunks: list[np.ndarray], threads: int = 1
) -> OrderedBuilds[worker_pb2.Batch]:
    """Encode prediction batches (pixels only: workers never see labels at prediction), on `threads` threads."""
    return OrderedBuilds(lambda index: make_batch(index, pixels[chunks[index]]), len(chunks), threads)


def order_digest(batch_digests: list[str]) -> str:
    """One digest for a sequence of batches: equal iff the same bytes came in the same order."""
    return hashlib.sha256("".join(batch_digests).encode()).hexdigest()
