"""Decoding and checking of incoming batches, before any framework code sees them.

Every failure raises BatchError naming the field at fault; the servicer turns it into
INVALID_ARGUMENT and the worker keeps serving.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxrbench.worker.v1 import worker_pb2
from cxrbench.worker.v1.tensors import LABEL_DTYPE, PIXEL_DTYPE, TensorError, batch_digest, decode_tensor


class BatchError(ValueError):
    """A malformed batch; the message starts with the field at fault."""


@dataclass(frozen=True)
class ExpectedBatch:
    """Shape constraints that follow from the Configure request."""

    image_size: int
    num_labels: int


@dataclass(frozen=True)
class CheckedBatch:
    """A batch whose shapes, dtypes and digest were verified."""

    index: int
    digest: str
    pixels: np.ndarray
    labels: np.ndarray | None


def check_batch(batch: worker_pb2.Batch, expected: ExpectedBatch, with_labels: bool) -> CheckedBatch:
    """Verify one batch against the configured model and recompute its digest."""
    if not batch.HasField("pixels"):
        raise BatchError("batch.pixels: missing")
    if with_labels and not batch.HasField("labels"):
        raise BatchError("batch.labels: missing (training batches carry labels)")
    if not with_labels and batch.HasField("labels"):
        raise BatchError("batch.labels: prediction batches must not carry labels")
    try:
        pixels = decode_tensor(batch.pixels, "batch.pixels")
        labels = decode_tensor(batch.labels, "batch.labels") if with_labels else None
    except TensorError as error:
        raise BatchError(str(error)) from None
    size = expected.image_size
    if pixels.dtype != np.dtype(PIXEL_DTYPE):
        raise BatchError(f"batch.pixels.dtype: {pixels.dtype.name}, expected {PIXEL_DTYPE}")
    if pixels.ndim != 3 or pixels.shape[1:] != (size, size) or pixels.shape[0] == 0:
        raise BatchError(f"batch.pixels.shape: {list(pixels.shape)}, expected [N>0, {size}, {size}]")
    if labels is not None:
        if labels.dtype != np.dtype(LABEL_DTYPE):
            raise BatchError(f"batch.labels.dtype: {labels.dtype.name}, expected {LABEL_DTYPE}")
        if labels.shape != (pixels.shape[0], expected.num_labels):
            raise BatchError(
                f"batch.labels.shape: {list(labels.shape)}, expected [{pixels.shape[0]}, {expected.num_labels}]"
            )
        if labels.size and labels.max() > 1:
            raise BatchError("batch.labels.data: labels must be 0 or 1")
    digest = batch_digest(batch.pixels, batch.labels if with_labels else None)
    if digest != batch.digest:
        raise BatchError(
            f"batch.digest: batch {batch.index} arrived with digest {batch.digest[:16]}..., "
            f"but its bytes hash to {digest[:16]}... (corrupted or altered in transit)"
        )
    return CheckedBatch(index=batch.index, digest=digest, pixels=pixels, labels=labels)
