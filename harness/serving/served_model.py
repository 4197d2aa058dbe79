"""One registered model served by one worker process, started on first use and shared by every caller.

Requests are served one at a time (a lock is the queue): a worker holds one model and computes one
batch at a time anyway, and callers that share it never see each other's batches. A worker that fails
to start or dies during a request is stopped and forgotten, the request raises ServingError, and the
next request starts a fresh one. Workers never outlive this process: `unload()` stops one, an atexit
handler stops those still running, and the local runtime tells each worker the harness's pid, so it
exits by itself should the harness be killed.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from cxrbench.worker.v1.tensors import make_batch
from cxrbench_worker.host import cuda_device_count
from harness.config import cache_root
from harness.model_registry import inference
from harness.model_registry.registered import RegisteredModel
from harness.runtime.base import Runtime
from harness.runtime.client import FEATURE_MAP_BATCH_SIZE, WorkerClient
from harness.runtime.local import LocalRuntime
from harness.runtime.registry import WorkerSpec, resolve_workers
from harness.serving.reading import Reading, ServingError, activation_maps, card_field, card_thresholds, make_reading
from harness.training.localize import head_weight

DEFAULT_IDLE_SECONDS = 600.0
# What serving reads of a model card (harness.model_registry.cards writes more).
CARD_FIELDS = ("worker", "architecture", "image_size", "labels", "thresholds", "weights_sha256")
# Each worker asks Linux to stop it when the harness dies (PR_SET_PDEATHSIG), but Linux sends that
# signal when the *thread* that started the worker ends, not the process: a worker started from a
# request's thread (a Streamlit session's script run, a server's handler) would be stopped as soon as
# that request ended. So workers are started from these threads, which live as long as the process.
_STARTERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cxrbench-serving-start")
# At exit, how long to wait for a request in flight before stopping its worker under it.
EXIT_WAIT_SECONDS = 2.0


def local_runtime(device: str = "auto") -> Callable[[], Runtime]:
    """A factory of local runtimes (workers as subprocesses, environments cached under cache_root()).

    `device`: "cpu" hides every GPU from the workers; "cuda" builds GPU environments; "auto" is "cuda"
    where this host has a CUDA device, else "cpu", as for the benchmark's --device auto.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device: {device!r} is not auto, cpu or cuda")

    def make() -> Runtime:
        runtime = LocalRuntime(cache_root())
        runtime.use_device(("cuda" if cuda_device_count() else "cpu") if device == "auto" else device)
        return runtime

    return make


def checked_weights(model: RegisteredModel) -> bytes:
    """The weights file's bytes once their SHA-256 is the card's `weights_sha256` (the one check of
    harness.model_registry.inference); ServingError naming the model and the file otherwise."""
    reference = model.reference()
    try:
        return inference.checked_weights(model.weights, model.card)
    except ValueError as error:
        raise ServingError(f"model {reference}: {error}; refusing to serve it") from None
    except OSError as error:
        raise ServingError(f"model {reference}: cannot read its weights file {model.weights}: {error}") from None


class ServedModel:
    """One worker process for one registered model; thread-safe (one request at a time)."""

    def __init__(self, model: RegisteredModel, runtime_factory: Callable[[], Runtime] | None = None,
                 idle_seconds: float = DEFAULT_IDLE_SECONDS, log_dir: Path | None = None) -> None:
        self.model = model
        self.reference = model.reference()
        for key in CARD_FIELDS:  # a card without one is refused now, not when a worker has started
            card_field(model.card, key, self.reference)
        self.idle_seconds = idle_seconds
        self.labels = tuple(str(label) for label in model.card["labels"])
        self.thresholds = card_thresholds(model.card, self.reference)
        self.image_size = int(model.card["image_size"])
        safe_name = model.name.replace("/", "_")
        self.log_path = (log_dir or cache_root() / "serving" / "logs") / f"{safe_name}-v{model.version}.log"
        self.last_used = time.monotonic()  # of the last request's end (monotonic clock)
        self._runtime_factory = runtime_factory or local_runtime()
        self._lock = threading.Lock()
        self._stack: ExitStack | None = None  # holds the worker (and its runtime) while loaded
        self._client: WorkerClient | None = None
        self._head: np.ndarray | None = None
        self._closed = False  # closed: unloaded for good (its pool was closed)

    def loaded(self) -> bool:
        """True while a worker process holds the model."""
        return self._client is not None

    def read(self, images: np.ndarray, maps: bool = False) -> Reading:
        """Probabilities and flags for `images` uint8 (n, size, size), and their CAMs when `maps`.

        Starts the worker first if none is running. ServingError when the worker cannot start or
        fails during the request (it is then stopped; the next request starts a fresh one)."""
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (self.image_size,) * 2:
            raise ValueError(f"model {self.reference}: images must be uint8 (n, {self.image_size}, "
                             f"{self.image_size}), got {images.dtype} {images.shape}")
        if not len(images):  # nothing to compute: no worker needs to start for it
            empty = np.zeros((0, len(self.labels)), np.float32)
            cams = np.zeros((0, len(self.labels), self.image_size, self.image_size), np.float32) if maps else None
            return make_reading(self.reference, self.labels, self.thresholds, empty, cams)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"model {self.reference}: closed, it serves no more requests")
            try:
                client = self._client or self._start()
                logits, cams = self._compute(client, images, maps)
            finally:
                self.last_used = time.monotonic()
        return make_reading(self.reference, self.labels, self.thresholds, logits, cams)

    def _compute(self, client: WorkerClient, images: np.ndarray, maps: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Predict, or FeatureMaps when maps are asked (its logits are the same forward pass's), in
        batches of at most FEATURE_MAP_BATCH_SIZE images (the message size limit of feature maps)."""
        starts = range(0, len(images), FEATURE_MAP_BATCH_SIZE)
        batches = (make_batch(i, images[s : s + FEATURE_MAP_BATCH_SIZE]) for i, s in enumerate(starts))
        cams = None
        try:
            if maps:
                features, logits, _ = client.feature_maps(batches)
                assert self._head is not None  # set by _start
                cams = activation_maps(features, self._head, self.image_size)
            else:
                logits, _ = client.predict(batches)
        except Exception as error:  # WorkerError, or the CAM formula refusing what came back
            self._stop()
            raise self._failure("its worker failed during the request", error) from error
        if logits.shape != (len(images), len(self.labels)):
            self._stop()
            raise self._failure(f"its worker answered logits of shape {logits.shape} for "
                                f"{len(images)} images and {len(self.labels)} labels", None)
        return logits, cams

    def _failure(self, what: str, error: Exception | None) -> ServingError:
        cause = f": {error}" if error is not None else ""
        return ServingError(f"model {self.reference}: {what}{cause}. Worker log: {self.log_path}. "
                            "A fresh worker will be started on the next request.")

    def _start(self) -> WorkerClient:
        """Verify the weights, start the worker, Configure it for inference and send the weights."""
        data = checked_weights(self.model)  # before any process starts: a refused file costs nothing
        try:
            self._head = head_weight(data, str(self.model.card["architecture"]), len(self.labels))
        except ValueError as error:
            raise ServingError(f"model {self.reference}: {self.model.weights}: {error}") from None
        spec = self._spec()
        stack = ExitStack()
        try:
            runtime = self._runtime_factory()
            stack.callback(runtime.close)
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a") as log:  # a start's lines are told apart from the last one's
                log.write(f"--- serving {self.reference}, started {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n")
            started = _STARTERS.submit(stack.enter_context, runtime.start(spec, self.log_path))
            try:
                client = started.result().client
            except BaseException:  # an interrupted wait too: stop the worker once it has started
                started.add_done_callback(lambda _: stack.close())
                raise
            client.configure(inference.inference_request(self.model.card))
            spec.check_reported(dict(client.metadata().framework_versions))  # keras@3.14.0 is that version
            client.set_weights(data)
        except Exception as error:  # environment, start-up, Configure or SetWeights: all the same to a caller
            stack.close()
            raise self._failure("its worker could not be started", error) from error
        self._stack, self._client = stack, client
        _RUNNING.add(self)
        return client

    def _spec(self) -> WorkerSpec:
        label = str(self.model.card["worker"])
        try:
            (spec,) = resolve_workers(label)
        except ValueError as error:
            reason = str(error).removeprefix("--workers: ")  # the card names it, not an option
            raise ServingError(f"model {self.reference}: the card's worker {label!r}: {reason}") from None
        return spec

    def _stop(self) -> None:
        """Stop the worker (the caller holds the lock, or the process is exiting)."""
        stack, self._stack, self._client = self._stack, None, None
        _RUNNING.discard(self)
        if stack is not None:
            stack.close()

    def unload(self) -> None:
        """Stop the worker, after the request in flight (if any); the next request starts a new one."""
        with self._lock:
            self._stop()

    def close(self) -> None:
        """Unload for good: later requests are refused (RuntimeError) instead of starting a worker."""
        with self._lock:
            self._closed = True
            self._stop()

    def unload_if_idle(self, now: float | None = None) -> bool:
        """Stop the worker when no request used it for `idle_seconds`; True when it was stopped.
        A model busy with a request is in use, so it is left alone without waiting."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            idle = (time.monotonic() if now is None else now) - self.last_used
            if self._client is None or idle < self.idle_seconds:
                return False
            self._stop()
            return True
        finally:
            self._lock.release()

    def memory(self) -> int | None:
        """The worker process's resident memory in bytes (its peak where the current size is not
        reported); None when no worker is running."""
        with self._lock:
            if self._client is None:
                return None
            usage = self._client.resource_usage()
        return int(usage["rss_bytes"] or usage["peak_rss_bytes"])

    def _stop_at_exit(self) -> None:
        # A daemon thread may be inside a request at exit: wait a little for it, then stop the worker anyway.
        acquired = self._lock.acquire(timeout=EXIT_WAIT_SECONDS)
        try:
            self._stop()
        finally:
            if acquired:
                self._lock.release()


_RUNNING: weakref.WeakSet[ServedModel] = weakref.WeakSet()  # models whose worker is running


@atexit.register
def _stop_running_workers() -> None:
    for served in list(_RUNNING):
        served._stop_at_exit()
