"""Tensor encoding and the batch digest: the hand-written half of the worker contract.

Both sides import this module (the harness to build batches, the worker SDK to check them), so the
digest has one definition. It is part of the contract: changing it is a contract change.
"""

from __future__ import annotations

import hashlib

import numpy as np

from cxrbench.worker.v1 import worker_pb2

CONTRACT_VERSION = "v1"
PIXEL_DTYPE = "uint8"
LABEL_DTYPE = "uint8"
LOGIT_DTYPE = "float32"
# gRPC's default 4 MB receive limit is too small for a batch of 224x224 images; both ends set this.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
GRPC_OPTIONS = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)


class TensorError(ValueError):
    """A Tensor message that cannot be decoded; `field` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def encode_tensor(array: np.ndarray) -> worker_pb2.Tensor:
    """Encode a numpy array as a row-major little-endian Tensor message."""
    contiguous = np.ascontiguousarray(array)
    if contiguous.dtype.byteorder == ">":
        contiguous = contiguous.astype(contiguous.dtype.newbyteorder("<"))
    return worker_pb2.Tensor(dtype=contiguous.dtype.name, shape=contiguous.shape, data=contiguous.tobytes())


def decode_tensor(tensor: worker_pb2.Tensor, field: str) -> np.ndarray:
    """Decode a Tensor message into a read-only numpy view; raises TensorError naming `field`."""
    try:
        dtype = np.dtype(tensor.dtype).newbyteorder("<")
    except TypeError:
        raise TensorError(f"{field}.dtype", f"unknown dtype {tensor.dtype!r}") from None
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape):
        raise TensorError(f"{field}.shape", f"negative dimension in {list(shape)}")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(tensor.data) != expected:
        raise TensorError(
            f"{field}.data",
            f"{len(tensor.data)} bytes, but dtype {dtype.name} and shape {list(shape)} need {expected}",
        )
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape)


def _update(digest: hashlib._Hash, name: str, tensor: worker_pb2.Tensor) -> None:
    shape = ",".join(str(int(d)) for d in tensor.shape)
    digest.update(f"{name}\0{tensor.dtype}\0{shape}\0".encode())
    digest.update(tensor.data)


def batch_digest(pixels: worker_pb2.Tensor, labels: worker_pb2.Tensor | None = None) -> str:
    """Hex SHA-256 over the pixel tensor and, when given, the label tensor.

    For each tensor in that order: its role ("pixels" or "labels"), dtype, shape and raw bytes,
    separated by NUL bytes. Computed on the encoded messages, so both sides hash exactly the bytes
    that travelled.
    """
    digest = hashlib.sha256()
    _update(digest, "pixels", pixels)
    if labels is not None:
        _update(digest, "labels", labels)
    return digest.hexdigest()


def make_batch(index: int, pixels: np.ndarray, labels: np.ndarray | None = None) -> worker_pb2.Batch:
    """Encode one batch with its digest (labels only for training batches)."""
    pixel_tensor = encode_tensor(pixels)
    label_tensor = encode_tensor(labels) if labels is not None else None
    batch = worker_pb2.Batch(index=index, pixels=pixel_tensor, digest=batch_digest(pixel_tensor, label_tensor))
    if label_tensor is not None:
        batch.labels.CopyFrom(label_tensor)
    return batch
