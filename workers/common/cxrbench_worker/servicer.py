"""The gRPC servicer every worker shares: validation, decoding, error mapping, then the backend.

Status codes (see worker.proto): a bad field is INVALID_ARGUMENT naming it, an option the backend
lacks is UNIMPLEMENTED, a call before Configure is FAILED_PRECONDITION, anything else INTERNAL with
the traceback. An error on a Train, Predict or FeatureMaps stream ends that stream only.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import grpc
import numpy as np

from cxrbench.worker.v1 import worker_pb2, worker_pb2_grpc
from cxrbench.worker.v1.tensors import CONTRACT_VERSION, encode_tensor
from cxrbench_worker.backend import (
    ARCHITECTURES,
    PRECISIONS,
    AdamSettings,
    Backend,
    ModelSpec,
    Numerics,
    UnsupportedOption,
)
from cxrbench_worker.batch_checks import BatchError, ExpectedBatch, check_batch
from cxrbench_worker.native_export import measure_native_export
from cxrbench_worker.neutral_weights import sha256_hex, weights_from_bytes, weights_to_bytes
from cxrbench_worker.process_memory import read_process_memory, reset_peak_rss

DEFAULT_CHUNK_BYTES = 1024 * 1024
T = TypeVar("T")


class NotConfigured(RuntimeError):
    """A call that needs a model before Configure built one."""


@contextmanager
def status_on_error(context: grpc.ServicerContext) -> Iterator[None]:
    """Turn the exceptions of one RPC into the status codes the contract promises."""
    try:
        yield
    except UnsupportedOption as error:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, str(error))
    except (BatchError, ValueError) as error:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
    except NotConfigured as error:
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
    except Exception:  # the traceback travels to the harness, which re-raises it with the worker's name
        context.abort(grpc.StatusCode.INTERNAL, traceback.format_exc())


def spec_from_request(request: worker_pb2.ConfigureRequest, backend: Backend) -> ModelSpec:
    """Validate a Configure request field by field and turn it into a ModelSpec."""
    if request.architecture not in ARCHITECTURES:
        raise ValueError(f"architecture: unknown {request.architecture!r} (known: {', '.join(ARCHITECTURES)})")
    if request.architecture not in backend.architectures:
        raise UnsupportedOption("architecture", f"{request.architecture!r} is not offered by this worker")
    if request.num_labels < 1:
        raise ValueError("num_labels: must be at least 1")
    if not 16 <= request.image_size <= 4096:
        raise ValueError(f"image_size: {request.image_size} is outside 16..4096")
    adam = request.optimizer
    Backend.check_learning_rate(adam.learning_rate, "optimizer.learning_rate")
    for name in ("beta1", "beta2"):
        if not 0 <= getattr(adam, name) < 1:
            raise ValueError(f"optimizer.{name}: {getattr(adam, name)} must be in [0, 1)")
    if not adam.epsilon > 0:
        raise ValueError(f"optimizer.epsilon: {adam.epsilon} must be > 0")
    if not adam.weight_decay >= 0:
        raise ValueError(f"optimizer.weight_decay: {adam.weight_decay} must be >= 0")
    precision = request.numerics.precision or "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"numerics.precision: unknown {precision!r} (known: {', '.join(PRECISIONS)})")
    if precision not in backend.precisions:
        raise UnsupportedOption("numerics.precision", f"{precision!r} is not offered by this worker")
    for name in ("mean", "std"):
        values = list(getattr(request, name))
        if len(values) != 3:
            raise ValueError(f"{name}: expected 3 values (one per RGB channel), got {len(values)}")
    if min(request.std) <= 0:
        raise ValueError("std: every value must be > 0")
    return ModelSpec(
        architecture=request.architecture,
        num_labels=request.num_labels,
        image_size=request.image_size,
        seed=request.seed,
        optimizer=AdamSettings(adam.learning_rate, adam.beta1, adam.beta2, adam.epsilon, adam.weight_decay),
        numerics=Numerics(precision, request.numerics.allow_tf32, request.numerics.deterministic),
        mean=tuple(request.mean),
        std=tuple(request.std),
        threads=request.threads,
        options=_options(request, backend),
    )


def _options(request: worker_pb2.ConfigureRequest, backend: Backend) -> dict[str, str]:
    """The framework-specific switches, each one the backend declares; UNIMPLEMENTED otherwise."""
    for key in sorted(request.options):
        if key not in backend.options:
            offered = ", ".join(backend.options) or "none"
            raise UnsupportedOption(f"options.{key}", f"not offered by this worker (offered: {offered})")
    return dict(request.options)


def check_feature_maps(features: np.ndarray, logits: np.ndarray, images: int, num_labels: int) -> None:
    """RuntimeError (INTERNAL: the backend is wrong, not the request) unless features are float32
    (images, C, h, w) and logits float32 (images, num_labels)."""
    if features.dtype != np.float32 or features.ndim != 4 or features.shape[0] != images:
        raise RuntimeError(f"backend returned features {features.dtype} {features.shape}, "
                           f"expected float32 ({images}, C, h, w)")
    if logits.dtype != np.float32 or logits.shape != (images, num_labels):
        raise RuntimeError(f"backend returned logits {logits.dtype} {logits.shape}, "
                           f"expected float32 {(images, num_labels)}")


class WorkerServicer(worker_pb2_grpc.WorkerServicer):
    """Implements the Worker service on top of one Backend; one model per worker process."""

    def __init__(self, worker_name: str, backend: Backend) -> None:
        self._name = worker_name
        self._backend = backend
        self._expected: ExpectedBatch | None = None
        # gRPC serves RPCs on several threads; the model is one, so calls on it are serialized.
        self._lock = threading.Lock()

    def _require_model(self, rpc: str) -> ExpectedBatch:
        if self._expected is None:
            raise NotConfigured(f"{rpc}: call Configure first; no model has been built")
        return self._expected

    def _timed(self, work: Callable[..., T], *args: np.ndarray) -> tuple[float, T]:
        """(seconds, result) of `work(*args)`, the device drained before the clock starts (so earlier
        queued work is not billed to this call) and after it stops (so this call's is)."""
        self._backend.synchronize()
        start = time.perf_counter()
        result = work(*args)
        self._backend.synchronize()
        return time.perf_counter() - start, result

    def GetMetadata(self, request, context):
        with status_on_error(context):
            meta = self._backend.metadata()
            return worker_pb2.GetMetadataResponse(
                worker=self._name,
                contract_version=CONTRACT_VERSION,
                framework_versions=meta.framework_versions,
                device=meta.device,
                threads=meta.threads,
                architectures=list(self._backend.architectures),
                precisions=list(self._backend.precisions),
                numerics=meta.numerics,
                pid=os.getpid(),
            )

    def Configure(self, request, context):
        with status_on_error(context), self._lock:
            spec = spec_from_request(request, self._backend)
            built = self._backend.configure(spec)
            self._expected = ExpectedBatch(image_size=spec.image_size, num_labels=spec.num_labels)
            return worker_pb2.ConfigureResponse(
                trainable_parameters=built.trainable_parameters,
                non_trainable_parameters=built.non_trainable_parameters,
                numerics=built.numerics,
            )

    def Train(self, request_iterator, context):
        with status_on_error(context):
            for request in request_iterator:
                expected = self._require_model("Train")
                batch = check_batch(request.batch, expected, with_labels=True)
                assert batch.labels is not None  # with_labels=True: check_batch refuses a batch without
                with self._lock:
                    seconds, loss = self._timed(self._backend.train_step, batch.pixels, batch.labels)
                yield worker_pb2.TrainResponse(
                    index=batch.index, digest=batch.digest, loss=loss, compute_seconds=seconds
                )

    def Predict(self, request_iterator, context):
        with status_on_error(context):
            for request in request_iterator:
                expected = self._require_model("Predict")
                batch = check_batch(request.batch, expected, with_labels=False)
                with self._lock:
                    seconds, logits = self._timed(self._backend.predict, batch.pixels)
                want = (batch.pixels.shape[0], expected.num_labels)
                if logits.shape != want:
                    raise RuntimeError(f"backend returned logits of shape {logits.shape}, expected {want}")
                yield worker_pb2.PredictResponse(
                    index=batch.index,
                    digest=batch.digest,
                    logits=encode_tensor(logits.astype(np.float32, copy=False)),
                    compute_seconds=seconds,
                )

    def FeatureMaps(self, request_iterator, context):
        with status_on_error(context):
            for request in request_iterator:
                expected = self._require_model("FeatureMaps")
                batch = check_batch(request.batch, expected, with_labels=False)
                with self._lock:
                    seconds, (features, logits) = self._timed(self._backend.feature_maps, batch.pixels)
                check_feature_maps(features, logits, batch.pixels.shape[0], expected.num_labels)
                yield worker_pb2.FeatureMapsResponse(
                    index=batch.index,
                    digest=batch.digest,
                    features=encode_tensor(features),
                    logits=encode_tensor(logits),
                    compute_seconds=seconds,
                )

    def SetHyperparameters(self, request, context):
        with status_on_error(context), self._lock:
            self._require_model("SetHyperparameters")
            Backend.check_learning_rate(request.learning_rate)
            self._backend.set_learning_rate(request.learning_rate)
            return worker_pb2.SetHyperparametersResponse(learning_rate=request.learning_rate)

    def GetWeights(self, request, context):
        with status_on_error(context):
            with self._lock:
                self._require_model("GetWeights")
                data = weights_to_bytes(self._backend.export_weights())
            chunk = request.chunk_bytes or DEFAULT_CHUNK_BYTES
            for offset in range(0, max(len(data), 1), chunk):
                first = offset == 0
                yield worker_pb2.GetWeightsResponse(
                    chunk=data[offset : offset + chunk],
                    total_bytes=len(data) if first else 0,
                    sha256=sha256_hex(data) if first else "",
                )

    def SetWeights(self, request_iterator, context):
        with status_on_error(context):
            self._require_model("SetWeights")
            chunks, total, digest = [], None, None
            for request in request_iterator:
                if total is None:
                    total, digest = request.total_bytes, request.sha256
                chunks.append(request.chunk)
            data = b"".join(chunks)
            if total is None:
                raise ValueError("chunk: no SetWeights request arrived")
            if len(data) != total:
                raise ValueError(f"total_bytes: announced {total}, received {len(data)}")
            if sha256_hex(data) != digest:
                raise ValueError("sha256: the received weights do not hash to the announced sha256")
            tensors = weights_from_bytes(data)
            with self._lock:
                self._backend.import_weights(tensors)
            return worker_pb2.SetWeightsResponse(tensors_loaded=len(tensors))

    def GetResourceUsage(self, request, context):
        # Under the lock, so a reading or a reset never lands in the middle of a step.
        with status_on_error(context), self._lock:
            process = read_process_memory()
            device = self._backend.device_memory(reset_peak=request.reset_peak)
            peak_reset = reset_peak_rss() if request.reset_peak else False
            energy = self._backend.energy_joules()
            return worker_pb2.GetResourceUsageResponse(
                peak_rss_bytes=process.peak_rss_bytes,
                rss_bytes=process.rss_bytes,
                rss_source=process.source,
                peak_reset=peak_reset,
                device_memory_reported=device.reported,
                device_peak_bytes=device.peak_bytes,
                device_bytes=device.current_bytes,
                device_total_bytes=device.total_bytes,
                device=device.device,
                energy_reported=energy is not None,
                device_energy_joules=energy or 0.0,
            )

    def ExportNative(self, request, context):
        with status_on_error(context), self._lock:
            self._require_model("ExportNative")
            export = measure_native_export(self._backend.export_native, request.include_archive)
            return worker_pb2.ExportNativeResponse(
                format=export.format, size_bytes=export.size_bytes, files=export.files,
                save_seconds=export.save_seconds, archive=export.archive,
            )
