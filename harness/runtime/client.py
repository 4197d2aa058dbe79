"""The harness side of the worker contract: one client per worker, one exception type for failures.

Every `grpc.RpcError` becomes a WorkerError that carries the worker, the RPC, the status code and
the details, so a failure reads "worker 'pytorch', Train: INVALID_ARGUMENT: batch.pixels.shape: ...".
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cxrbench.worker.v1 import worker_pb2, worker_pb2_grpc
from cxrbench.worker.v1.tensors import GRPC_OPTIONS, decode_tensor

WEIGHT_CHUNK_BYTES = 4 * 1024 * 1024


class WorkerError(RuntimeError):
    """A worker call that failed; says which worker, which RPC, and why."""

    def __init__(self, worker: str, rpc: str, code: str, details: str) -> None:
        self.worker, self.rpc, self.code, self.details = worker, rpc, code, details
        super().__init__(f"worker '{worker}', {rpc}: {code}: {details}")


@dataclass(frozen=True)
class ChannelSecurity:
    """How to reach a worker that is not on loopback: TLS (with these roots) and a bearer token."""

    tls: bool = False
    root_certificates: bytes | None = None  # None with tls: the system's trusted roots
    token: str | None = None
    server_name: str | None = None  # the name to check the certificate against, if not the address's

    def credentials(self) -> grpc.ChannelCredentials:
        channel = grpc.ssl_channel_credentials(root_certificates=self.root_certificates)
        if self.token is None:
            return channel
        return grpc.composite_channel_credentials(channel, grpc.access_token_call_credentials(self.token))


@dataclass(frozen=True)
class StepResult:
    """One training step as the worker reported it."""

    index: int
    loss: float
    compute_seconds: float
    digest: str


# Statuses a worker sends itself when it refuses a request: it is alive, so there is no exit status to
# wait for. Any other failure (a dropped connection, a crash mid-call) asks `on_failure` how it ended.
ANSWERED_BY_THE_WORKER = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.OUT_OF_RANGE,
})


class WorkerClient:
    """Calls one worker; checks that every batch digest comes back as it was sent."""

    def __init__(self, name: str, address: str, on_failure: Callable[[], str | None] | None = None,
                 security: ChannelSecurity | None = None) -> None:
        """`on_failure` returns extra context (e.g. the worker process's exit status) for errors, or None."""
        self.name = name
        self.address = address
        self._on_failure = on_failure
        self.last_health_error: str | None = None  # why the last health check failed, for errors
        self._channel = _channel(address, security or ChannelSecurity())
        self._stub = worker_pb2_grpc.WorkerStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def _error(self, rpc: str, error: grpc.RpcError) -> WorkerError:
        details = error.details() or ""
        if self._on_failure is not None and error.code() not in ANSWERED_BY_THE_WORKER:
            extra = self._on_failure()
            if extra:
                details = f"{details} ({extra})" if details else extra
        return WorkerError(self.name, rpc, error.code().name, details)

    def _call(self, rpc: str, request, timeout: float | None = 60.0):
        try:
            return getattr(self._stub, rpc)(request, timeout=timeout)
        except grpc.RpcError as error:
            raise self._error(rpc, error) from None

    def is_serving(self, timeout: float = 1.0) -> bool:
        """True when grpc.health.v1 reports SERVING."""
        try:
            reply = self._health.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError as error:
            self.last_health_error = f"{error.code().name}: {error.details()}"
            return False
        self.last_health_error = f"health status {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def metadata(self) -> worker_pb2.GetMetadataResponse:
        return self._call("GetMetadata", worker_pb2.GetMetadataRequest())

    def configure(self, request: worker_pb2.ConfigureRequest) -> worker_pb2.ConfigureResponse:
        # Building a model can take a while on a slow machine; no short deadline here.
        return self._call("Configure", request, timeout=None)

    def set_learning_rate(self, learning_rate: float) -> float:
        reply = self._call("SetHyperparameters", worker_pb2.SetHyperparametersRequest(learning_rate=learning_rate))
        return reply.learning_rate

    def _stream(self, rpc: str, batches: Iterable[worker_pb2.Batch], wrap) -> Iterator:
        """Stream `batches` through a bidirectional RPC; yield each reply after strict checks.

        Replies must come one per batch, in order, each echoing the digest that was sent; anything
        else aborts with a WorkerError. A failure while building batches (harness side) ends the
        request stream and is re-raised as itself, not blamed on the worker.
        """
        sent: list[tuple[int, str]] = []
        harness_failure: list[Exception] = []

        def requests():
            try:
                for batch in batches:
                    sent.append((batch.index, batch.digest))
                    yield wrap(batch)
            except Exception as error:  # raised in gRPC's sending thread: keep it for the caller
                harness_failure.append(error)

        answered = 0
        try:
            for reply in getattr(self._stub, rpc)(requests()):
                if answered >= len(sent):
                    raise WorkerError(self.name, rpc, "PROTOCOL", f"answered batch {reply.index}, which was not sent")
                index, digest = sent[answered]
                if reply.index != index:
                    raise WorkerError(self.name, rpc, "PROTOCOL",
                                      f"answered batch {reply.index} where batch {index} was due")
                if reply.digest != digest:
                    raise WorkerError(
                        self.name, rpc, "DIGEST_MISMATCH",
                        f"batch {index} was sent with digest {digest[:16]}... "
                        f"but the worker computed {reply.digest[:16]}...",
                    )
                answered += 1
                yield reply
        except grpc.RpcError as error:
            if harness_failure:  # the RPC failed because the requests did: the harness's error alone
                raise harness_failure[0] from None
            raise self._error(rpc, error) from None
        if harness_failure:
            raise harness_failure[0]
        if answered != len(sent):
            raise WorkerError(self.name, rpc, "PROTOCOL", f"ended the stream after {answered} of {len(sent)} batches")

    def train(self, batches: Iterable[worker_pb2.Batch]) -> Iterator[StepResult]:
        """Stream training batches; yields one result per batch, in order, digest checked."""
        for reply in self._stream("Train", batches, lambda batch: worker_pb2.TrainRequest(batch=batch)):
            yield StepResult(reply.index, reply.loss, reply.compute_seconds, reply.digest)

    def predict(self, batches: Iterable[worker_pb2.Batch]) -> tuple[np.ndarray, float]:
        """Stream prediction batches; returns (logits of all samples in order, worker compute seconds)."""
        logits: list[np.ndarray] = []
        compute = 0.0
        for reply in self._stream("Predict", batches, lambda batch: worker_pb2.PredictRequest(batch=batch)):
            logits.append(decode_tensor(reply.logits, "logits").astype(np.float32))
            compute += reply.compute_seconds
        return np.concatenate(logits) if logits else np.zeros((0, 0), np.float32), compute

    def get_weights(self) -> bytes:
        """The model's neutral safetensors file, verified against the announced size and SHA-256."""
        try:
            replies = list(self._stub.GetWeights(worker_pb2.GetWeightsRequest(chunk_bytes=WEIGHT_CHUNK_BYTES)))
        except grpc.RpcError as error:
            raise self._error("GetWeights", error) from None
        data = b"".join(reply.chunk for reply in replies)
        if not replies or len(data) != replies[0].total_bytes or hashlib.sha256(data).hexdigest() != replies[0].sha256:
            raise WorkerError(self.name, "GetWeights", "DATA_LOSS",
                              "the weights received do not match their size or SHA-256")
        return data

    def set_weights(self, data: bytes) -> int:
        """Send a neutral safetensors file; returns the number of tensors the worker loaded."""
        digest = hashlib.sha256(data).hexdigest()

        def requests() -> Iterator[worker_pb2.SetWeightsRequest]:
            for offset in range(0, max(len(data), 1), WEIGHT_CHUNK_BYTES):
                first = offset == 0
                yield worker_pb2.SetWeightsRequest(
                    chunk=data[offset : offset + WEIGHT_CHUNK_BYTES],
                    total_bytes=len(data) if first else 0,
                    sha256=digest if first else "",
                )

        try:
            return self._stub.SetWeights(requests()).tensors_loaded
        except grpc.RpcError as error:
            raise self._error("SetWeights", error) from None

    def resource_usage(self, reset_peak: bool = False) -> dict:
        """The worker's memory: peak and current RSS of its process, and its accelerator's where the
        framework reports it (keys are GetResourceUsageResponse's fields, sizes in bytes).

        `reset_peak` resets the peaks after this reading, so the next covers only what follows.
        """
        reply = self._call("GetResourceUsage", worker_pb2.GetResourceUsageRequest(reset_peak=reset_peak))
        return _plain(reply)

    def export_native(self) -> dict:
        """Have the worker save its model in its framework's own format, measure it and delete it.

        Returns ExportNativeResponse's fields: format (in words), size_bytes, files, save_seconds.
        """
        # Writing a large model to a slow disk can take longer than the default deadline.
        return _plain(self._call("ExportNative", worker_pb2.ExportNativeRequest(), timeout=600.0))


def _channel(address: str, security: ChannelSecurity) -> grpc.Channel:
    if security.token is not None and not security.tls:
        # gRPC sends call credentials only over TLS; a token in clear text would be readable anyway.
        raise ValueError(f"{address}: a token is sent only over TLS")
    if not security.tls:
        return grpc.insecure_channel(address, options=list(GRPC_OPTIONS))
    options: list[tuple[str, int | str]] = list(GRPC_OPTIONS)
    if security.server_name:
        options.append(("grpc.ssl_target_name_override", security.server_name))
    return grpc.secure_channel(address, security.credentials(), options=options)


def _plain(message) -> dict:
    """Every field of a reply of scalar fields, defaults included, as a plain dict."""
    return {field.name: getattr(message, field.name) for field in message.DESCRIPTOR.fields}


def wait_until_serving(client: WorkerClient, timeout: float, alive: Callable[[], str | None]) -> None:
    """Poll health until SERVING; `alive()` returns a reason string once the process has died."""
    deadline = time.monotonic() + timeout
    pause = 0.02  # a worker without a framework serves within a second: look often at first, then every 0.2 s
    while time.monotonic() < deadline:
        reason = alive()
        if reason:
            raise WorkerError(client.name, "health", "NOT_STARTED", reason)
        if client.is_serving():
            return
        time.sleep(pause)
        pause = min(2 * pause, 0.2)
    last = f"; last answer: {client.last_health_error}" if client.last_health_error else ""
    raise WorkerError(client.name, "health", "DEADLINE_EXCEEDED",
                      f"{client.address} not SERVING after {timeout:.0f} s{last}")
