"""The harness side of the worker contract: one client per worker, one exception type for failures.

Every `grpc.RpcError` becomes a WorkerError that carries the worker, the RPC, the status code and
the details, so a failure reads "worker 'pytorch', Train: INVALID_ARGUMENT: batch.pixels.shape: ...".
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cxrbench.worker.v1 import worker_pb2, worker_pb2_grpc
from cxrbench.worker.v1.tensors import CLIENT_OPTIONS, PING_TIMEOUT_SECONDS, decode_tensor
from harness.runtime.stream_watchdog import DEFAULT_STALL_FLOOR_SECONDS, STEP_HISTORY, StreamWatchdog, seconds_text

WEIGHT_CHUNK_BYTES = 4 * 1024 * 1024
# Deadlines: every call ends. Unary calls answer in well under a second; a minute allows a busy host.
UNARY_DEADLINE_SECONDS = 60.0
# Configure builds the model and may trace or compile it: minutes on a slow machine, never hours.
CONFIGURE_DEADLINE_SECONDS = 600.0
# Weights: a minute, plus the size at 4 MiB/s (a 30 Mbit/s link to a remote worker; loopback moves
# hundreds of MB/s). A 100 MB ResNet-50 file gets 84 s.
WEIGHTS_DEADLINE_SECONDS = 60.0
WEIGHTS_MIN_BYTES_PER_SECOND = 4 * 1024 * 1024
# Neutral weights are float32; twice that per parameter covers int64 buffers and the header.
WEIGHT_BYTES_PER_PARAMETER = 8
# The most images per FeatureMaps batch: 16 ResNet-50 maps at 224 px are 6.4 MB, and the 256 MiB
# message limit (tensors.MAX_MESSAGE_BYTES) holds 16 of them up to about 1440 px (45 x 45 cells).
FEATURE_MAP_BATCH_SIZE = 16
# How long an abandoned stream waits for the harness's batch source to hand over the batch it is
# building, so that gRPC's request thread never waits on a source that is about to be closed.
PULL_GRACE_SECONDS = 10.0


def weights_deadline(size_bytes: int | None) -> float:
    """Seconds allowed to move a weights file of `size_bytes` (Configure's deadline when unknown)."""
    if size_bytes is None:
        return CONFIGURE_DEADLINE_SECONDS
    return WEIGHTS_DEADLINE_SECONDS + size_bytes / WEIGHTS_MIN_BYTES_PER_SECOND


class WorkerError(RuntimeError):
    """A worker call that failed; says which worker, which RPC, and why."""

    def __init__(self, worker: str, rpc: str, code: str, details: str) -> None:
        self.worker, self.rpc, self.code, self.details = worker, rpc, code, details
        super().__init__(f"worker '{worker}', {rpc}: {code}: {details}")

    def __reduce__(self) -> tuple:
        # Pickle rebuilds an exception as cls(*self.args), here the one message: the four fields instead,
        # so the error survives the trip from a run on a Ray node to the study's driver (with any notes).
        return type(self), (self.worker, self.rpc, self.code, self.details), self.__dict__


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
                 security: ChannelSecurity | None = None, stall_timeout: float = DEFAULT_STALL_FLOOR_SECONDS) -> None:
        """`on_failure` returns extra context (e.g. the worker process's exit status) for errors, or None.

        `stall_timeout` is the stream watchdog's floor (`--stall-timeout`); it may be set later too.
        """
        self.name = name
        self.address = address
        self.stall_timeout = stall_timeout
        self._on_failure = on_failure
        self.last_health_error: str | None = None  # why the last health check failed, for errors
        self._steps: dict[str, deque[float]] = {}  # per streaming RPC: recent step times, for the watchdog
        self._weights_bytes: int | None = None  # the size of the model's weights, once known
        self._channel = _channel(address, security or ChannelSecurity())
        self._stub = worker_pb2_grpc.WorkerStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def _error(self, rpc: str, error: grpc.RpcError, timeout: float | None = None) -> WorkerError:
        details = error.details() or ""
        if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and timeout is not None:
            details = f"no answer within its deadline of {seconds_text(timeout)} s ({details})"
        elif "ping timeout" in details or "keepalive" in details.lower():
            details = (f"{details}: the connection's keepalive ping went unanswered for {PING_TIMEOUT_SECONDS} s "
                       "(the worker process is stopped or its host unreachable)")
        if self._on_failure is not None and error.code() not in ANSWERED_BY_THE_WORKER:
            extra = self._on_failure()
            if extra:
                details = f"{details} ({extra})" if details else extra
        return WorkerError(self.name, rpc, error.code().name, details)

    def _call(self, rpc: str, request, timeout: float | None = None):
        """A unary call with a deadline: `timeout`, or UNARY_DEADLINE_SECONDS."""
        timeout = UNARY_DEADLINE_SECONDS if timeout is None else timeout
        try:
            return getattr(self._stub, rpc)(request, timeout=timeout)
        except grpc.RpcError as error:
            raise self._error(rpc, error, timeout) from None

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
        reply = self._call("Configure", request, timeout=CONFIGURE_DEADLINE_SECONDS)
        parameters = reply.trainable_parameters + reply.non_trainable_parameters
        self._weights_bytes = WEIGHT_BYTES_PER_PARAMETER * parameters or None
        return reply

    def set_learning_rate(self, learning_rate: float) -> float:
        reply = self._call("SetHyperparameters", worker_pb2.SetHyperparametersRequest(learning_rate=learning_rate))
        return reply.learning_rate

    def _stream(self, rpc: str, batches: Iterable[worker_pb2.Batch], wrap) -> Iterator:
        """Stream `batches` through a bidirectional RPC; yield each reply after strict checks.

        Replies must come one per batch, in order, each echoing the digest that was sent; anything
        else aborts with a WorkerError. A failure while building batches (harness side) ends the
        request stream and is re-raised as itself, not blamed on the worker. A worker that stops
        answering is cancelled by the watchdog (STALLED, see stream_watchdog.py).
        """
        sent: list[tuple[int, str]] = []
        harness_failure: list[Exception] = []
        source = iter(batches)
        pulling = threading.Lock()  # held while gRPC's request thread takes a batch from `source`
        abandoned = threading.Event()  # the stream is over: take no more batches
        call = None

        def requests():
            while True:
                with pulling:
                    if abandoned.is_set():
                        return
                    try:
                        batch = next(source)
                    except StopIteration:
                        return
                    except Exception as error:  # raised in gRPC's sending thread: keep it for the caller
                        harness_failure.append(error)
                        return
                sent.append((batch.index, batch.digest))
                watchdog.sent()
                yield wrap(batch)

        watchdog = StreamWatchdog(self.stall_timeout, self._steps.setdefault(rpc, deque(maxlen=STEP_HISTORY)),
                                  cancel=lambda: call.cancel() if call is not None else None)
        answered = 0
        try:
            call = getattr(self._stub, rpc)(requests())
            for reply in call:
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
                watchdog.answered(index)
                answered += 1
                yield reply
        except grpc.RpcError as error:
            if watchdog.stalled is not None:
                raise WorkerError(self.name, rpc, "STALLED", watchdog.stalled) from None
            if harness_failure:  # the RPC failed because the requests did: the harness's error alone
                raise harness_failure[0] from None
            failure = self._error(rpc, error)
            raise WorkerError(self.name, rpc, failure.code, f"{failure.details}; {watchdog.progress()}") from None
        finally:
            watchdog.stop()
            abandoned.set()
            if call is not None:
                call.cancel()  # no effect on a finished call; ends the worker's side of an abandoned one
            # Wait for a batch being taken right now, so the request thread sees `abandoned` and ends
            # before the caller closes the batch source under it.
            if pulling.acquire(timeout=PULL_GRACE_SECONDS):
                pulling.release()
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

    def feature_maps(self, batches: Iterable[worker_pb2.Batch]) -> tuple[np.ndarray, np.ndarray, float]:
        """Stream batches through FeatureMaps; returns (final feature maps float32 (N, C, h, w), the
        logits of the same passes float32 (N, L), worker compute seconds), samples in order.

        A reply is N x C x h x w x 4 bytes (ResNet-50 at 224 px: 6.4 MB for 16 images) under the
        256 MiB message limit: send batches of FEATURE_MAP_BATCH_SIZE images at most."""
        features: list[np.ndarray] = []
        logits: list[np.ndarray] = []
        compute = 0.0
        for reply in self._stream("FeatureMaps", batches, lambda batch: worker_pb2.FeatureMapsRequest(batch=batch)):
            maps = decode_tensor(reply.features, "features").astype(np.float32)
            scores = decode_tensor(reply.logits, "logits").astype(np.float32)
            if maps.ndim != 4 or scores.ndim != 2 or maps.shape[0] != scores.shape[0]:
                raise WorkerError(self.name, "FeatureMaps", "PROTOCOL",
                                  f"batch {reply.index}: features {maps.shape} and logits {scores.shape} are not "
                                  "(N, C, h, w) and (N, L)")
            features.append(maps)
            logits.append(scores)
            compute += reply.compute_seconds
        if not features:
            return np.zeros((0, 0, 0, 0), np.float32), np.zeros((0, 0), np.float32), compute
        return np.concatenate(features), np.concatenate(logits), compute

    def get_weights(self) -> bytes:
        """The model's neutral safetensors file, verified against the announced size and SHA-256."""
        timeout = weights_deadline(self._weights_bytes)
        try:
            replies = list(self._stub.GetWeights(worker_pb2.GetWeightsRequest(chunk_bytes=WEIGHT_CHUNK_BYTES),
                                                 timeout=timeout))
        except grpc.RpcError as error:
            raise self._error("GetWeights", error, timeout) from None
        data = b"".join(reply.chunk for reply in replies)
        if not replies or len(data) != replies[0].total_bytes or hashlib.sha256(data).hexdigest() != replies[0].sha256:
            raise WorkerError(self.name, "GetWeights", "DATA_LOSS",
                              "the weights received do not match their size or SHA-256")
        self._weights_bytes = len(data)
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

        timeout = weights_deadline(len(data))
        try:
            loaded = self._stub.SetWeights(requests(), timeout=timeout).tensors_loaded
        except grpc.RpcError as error:
            raise self._error("SetWeights", error, timeout) from None
        self._weights_bytes = len(data)
        return loaded

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
        reply = self._call("ExportNative", worker_pb2.ExportNativeRequest(), timeout=CONFIGURE_DEADLINE_SECONDS)
        return {key: value for key, value in _plain(reply).items() if key != "archive"}

    def export_native_archive(self) -> tuple[dict, bytes]:
        """The worker's model in its framework's own format: (what export_native returns, the files as a tar)."""
        reply = self._call("ExportNative", worker_pb2.ExportNativeRequest(include_archive=True),
                           timeout=CONFIGURE_DEADLINE_SECONDS)
        if not reply.archive:
            raise WorkerError(self.name, "ExportNative", "UNIMPLEMENTED",
                              "the worker sent no archive of its export (a worker older than the model registry)")
        return {key: value for key, value in _plain(reply).items() if key != "archive"}, reply.archive


def _channel(address: str, security: ChannelSecurity) -> grpc.Channel:
    if security.token is not None and not security.tls:
        # gRPC sends call credentials only over TLS; a token in clear text would be readable anyway.
        raise ValueError(f"{address}: a token is sent only over TLS")
    if not security.tls:
        return grpc.insecure_channel(address, options=list(CLIENT_OPTIONS))
    options: list[tuple[str, int | str]] = list(CLIENT_OPTIONS)
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
