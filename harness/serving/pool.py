"""The models a process serves: one ServedModel per registered version, shared by every caller.

References are resolved once and remembered while their model's worker runs; once an idle model is
unloaded, its references are resolved again on next use, so an alias moved in the registry (a new
champion) is followed. Two references to the same version ("name@champion", "name/3") share one
worker. A background thread unloads models unused for `idle_seconds`.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from harness.model_registry.registered import RegisteredModel
from harness.runtime.base import Runtime
from harness.serving.reading import Reading
from harness.serving.served_model import DEFAULT_IDLE_SECONDS, ServedModel

# The idle check runs a few times per idle period (unloads within a quarter period of it), at most
# every 30 s, and no more often than 20 times a second (tests use idle periods under a second).
REAPER_LONGEST_PAUSE = 30.0
REAPER_SHORTEST_PAUSE = 0.05


def registry_resolver(uri: str | None) -> Callable[[str], RegisteredModel]:
    """References resolved in the MLflow registry at `uri` (imported on first use: MLflow is slow to import)."""

    def resolve(reference: str) -> RegisteredModel:
        from harness.model_registry import store

        return store.resolve(reference, uri or store.registry_uri(None))

    return resolve


class ModelPool:
    """Registered models served on demand, each by one worker, unloaded when idle; thread-safe."""

    def __init__(self, uri: str | None = None, idle_seconds: float = DEFAULT_IDLE_SECONDS,
                 runtime_factory: Callable[[], Runtime] | None = None,
                 resolve: Callable[[str], RegisteredModel] | None = None, log_dir: Path | None = None) -> None:
        """`uri`: the MLflow registry (None: the default one); `resolve`: reference -> RegisteredModel,
        replacing the registry (tests); `runtime_factory`: where workers run (default: local, --device auto)."""
        self.idle_seconds = idle_seconds
        self._resolve = resolve or registry_resolver(uri)
        self._runtime_factory = runtime_factory
        self._log_dir = log_dir
        self._lock = threading.Lock()  # guards the two tables, never held during a request or a resolve
        self._resolved: dict[str, ServedModel] = {}  # reference -> its model, while that model is loaded
        self._served: dict[tuple[str, int], ServedModel] = {}  # (name, version) -> its model, kept for good
        self._closed = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="model-pool-reaper", daemon=True)
        self._reaper.start()

    def served(self, reference: str) -> ServedModel:
        """The served model `reference` names (resolved in the registry on first use; no worker started)."""
        with self._lock:
            self._check_open()
            known = self._resolved.get(reference)
        if known is not None:
            return known
        model = self._resolve(reference)  # outside the lock: a registry query may take a while
        with self._lock:
            self._check_open()
            served = self._served.get((model.name, model.version))
            if served is None:
                served = ServedModel(model, self._runtime_factory, self.idle_seconds, self._log_dir)
                self._served[(model.name, model.version)] = served
            self._resolved[reference] = served
        return served

    def read(self, reference: str, images: np.ndarray, maps: bool = False) -> Reading:
        """`reference`'s reading of `images` uint8 (n, size, size), the model's image size (see
        `served(reference).image_size`); CAMs too when `maps`. ServingError when its worker fails."""
        reading = self.served(reference).read(images, maps=maps)
        return dataclasses.replace(reading, model=reference)

    def memory(self) -> dict[str, int]:
        """Each loaded model's worker's resident memory in bytes, by the model's reference."""
        with self._lock:
            served = list(self._served.values())
        sizes = {model.reference: model.memory() for model in served if model.loaded()}
        return {reference: size for reference, size in sizes.items() if size is not None}

    def loaded(self) -> list[str]:
        """The references (name@alias or name/version) of the models whose worker is running."""
        with self._lock:
            return [model.reference for model in self._served.values() if model.loaded()]

    def unload_idle(self) -> list[str]:
        """Unload the models unused for `idle_seconds` now; returns their references."""
        with self._lock:
            served = list(self._served.values())
        unloaded = [model for model in served if model.unload_if_idle()]
        if unloaded:
            with self._lock:  # their references are resolved afresh next time (an alias may have moved)
                self._resolved = {ref: model for ref, model in self._resolved.items() if model not in unloaded}
        return [model.reference for model in unloaded]

    def _reap(self) -> None:
        pause = min(max(self.idle_seconds / 4, REAPER_SHORTEST_PAUSE), REAPER_LONGEST_PAUSE)
        while not self._closed.wait(pause):
            self.unload_idle()

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise RuntimeError("the model pool is closed")

    def close(self) -> None:
        """Stop every worker (after its request in flight) and the idle check; the pool serves no more."""
        self._closed.set()
        if self._reaper is not threading.current_thread():
            self._reaper.join()
        with self._lock:
            served = list(self._served.values())
            self._resolved.clear()
        for model in served:
            model.close()

    def __enter__(self) -> ModelPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
