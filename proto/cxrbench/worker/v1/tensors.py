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

# Keepalive: a worker that vanishes (a half-open TCP link to a remote host, a stopped process) is noticed
# even in the middle of a long call. Each end pings every KEEPALIVE_SECONDS when the link is quiet and
# drops the connection when a ping goes unanswered for PING_TIMEOUT_SECONDS: a dead peer is found within
# 20 + 20 = 40 s, under a minute. gRPC core (1.6x on) waits `grpc.http2.ping_timeout_ms` (default a
# minute) for the ack, not only `grpc.keepalive_timeout_ms`, so both are set. `max_pings_without_data`
# 0: keep pinging through a long silent call (Configure compiling, a slow step), where the default of 2
# would stop after two pings. The channel pings between calls too (evaluation between epochs), which
# also keeps NAT and firewall idle timers from closing it.
KEEPALIVE_SECONDS = 20
PING_TIMEOUT_SECONDS = 20


def keepalive_options(ping_seconds: float, timeout_seconds: float) -> tuple[tuple[str, int], ...]:
    """The pinging end's keepalive settings (both ends ping, so both use this)."""
    return (
        ("grpc.keepalive_time_ms", int(ping_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", int(timeout_seconds * 1000)),
        ("grpc.http2.ping_timeout_ms", int(timeout_seconds * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    )


def ping_policy_options(client_ping_seconds: float) -> tuple[tuple[str, int], ...]:
    """The server's tolerance of the client's pings.

    By default a server accepts a ping only every 5 minutes when it sends no data (a long Configure, an
    idle channel), and only during calls; after two early pings it closes the connection with GOAWAY
    "too_many_pings", failing the call. It must accept the client's interval with and without calls:
    half of it, so that timer jitter never counts as abuse. (Accepting pings without calls is
    `grpc.keepalive_permit_without_calls`, set by `keepalive_options`.)
    """
    return (("grpc.http2.min_ping_interval_without_data_ms", int(client_ping_seconds * 1000 / 2)),)


# gRPC waits 1 s before its first reconnection attempt: a worker whose socket appears 0.1 s after the
# first health check would be seen serving only a second later, at every worker start. 0.1 s, growing
# to 2 s for a worker that stays away (a remote one being restarted).
RECONNECT_OPTIONS = (("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                     ("grpc.max_reconnect_backoff_ms", 2000))
CLIENT_OPTIONS = GRPC_OPTIONS + keepalive_options(KEEPALIVE_SECONDS, PING_TIMEOUT_SECONDS) + RECONNECT_OPTIONS
# The server pings too, so that a vanished harness ends the worker's stream handlers instead of leaving
# them waiting for a next batch that never comes (a remote worker outlives the harness that used it).
SERVER_OPTIONS = GRPC_OPTIONS + keepalive_options(KEEPALIVE_SECONDS, PING_TIMEOUT_SECONDS) + ping_policy_options(
    KEEPALIVE_SECONDS)


class TensorError(ValueError):
    """A Tensor message that cannot be decoded; `field` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _little_endian(array: np.ndarray) -> np.ndarray:
    contiguous = np.ascontiguousarray(array)
    if contiguous.dtype.byteorder == ">":
        contiguous = contiguous.astype(contiguous.dtype.newbyteorder("<"))
    return contiguous


def encode_tensor(array: np.ndarray) -> worker_pb2.Tensor:
    """Encode a numpy array as a row-major little-endian Tensor message."""
    contiguous = _little_endian(array)
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


def _update(digest: hashlib._Hash, name: str, dtype: str, shape: tuple[int, ...], data: bytes | memoryview) -> None:
    digest.update(f"{name}\0{dtype}\0{','.join(str(int(d)) for d in shape)}\0".encode())
    digest.update(data)


def batch_digest(pixels: worker_pb2.Tensor, labels: worker_pb2.Tensor | None = None) -> str:
    """Hex SHA-256 over the pixel tensor and, when given, the label tensor.

    For each tensor in that order: its role ("pixels" or "labels"), dtype, shape and raw bytes,
    separated by NUL bytes. Computed on the encoded messages, so both sides hash exactly the bytes
    that travelled.
    """
    digest = hashlib.sha256()
    _update(digest, "pixels", pixels.dtype, tuple(pixels.shape), pixels.data)
    if labels is not None:
        _update(digest, "labels", labels.dtype, tuple(labels.shape), labels.data)
    return digest.hexdigest()


def _fill(tensor: worker_pb2.Tensor, name: str, array: np.ndarray, digest: hashlib._Hash) -> None:
    """Encode `array` into `tensor` in place, hashing it as batch_digest would (from the array's own buffer)."""
    contiguous = _little_endian(array)
    tensor.dtype = contiguous.dtype.name
    tensor.shape.extend(contiguous.shape)
    # Hashing the array's buffer copies nothing and releases the GIL; reading `tensor.data` back would copy.
    _update(digest, name, tensor.dtype, contiguous.shape, contiguous.reshape(-1).view(np.uint8).data)
    tensor.data = contiguous.tobytes()


def make_batch(index: int, pixels: np.ndarray, labels: np.ndarray | None = None) -> worker_pb2.Batch:
    """Encode one batch with its digest (labels only for training batches).

    The tensors are filled in place (building them apart and passing them to Batch() would copy every
    byte once more) and hashed from the arrays: the digest is batch_digest's, with fewer copies made
    while the GIL is held, so batches built on several threads scale with cores.
    """
    batch = worker_pb2.Batch(index=index)
    digest = hashlib.sha256()
    _fill(batch.pixels, "pixels", pixels, digest)
    if labels is not None:
        _fill(batch.labels, "labels", labels, digest)
    batch.digest = digest.hexdigest()
    return batch
