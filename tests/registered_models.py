"""Registered models for serving tests, made without MLflow: real starting weights of an architecture
(the benchmark's own draw) in a safetensors file, a model card naming the null worker, and a local
runtime that counts the workers it starts.

Shared by tests/test_serving.py and tests/test_predict_command.py (and any page test that serves models).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.config import cache_root
from harness.data.datasets.labels import CHESTXRAY14_LABELS
from harness.model_registry.registered import RegisteredModel
from harness.models.weights.start import starting_weights
from harness.runtime.base import RunningWorker
from harness.runtime.local import LocalRuntime
from harness.runtime.registry import WorkerSpec

# Seven thresholds below the null worker's 0.5, six above, and one at it (a tie flags).
THRESHOLDS = (0.4,) * 7 + (0.6,) * 6 + (0.5,)
EXPECTED_FLAGS = tuple(t <= 0.5 for t in THRESHOLDS)


def write_weights(folder: Path, architecture: str = "densenet121", seed: int = 0) -> Path:
    """The benchmark's starting weights of `architecture` (torchvision's scheme, drawn by the harness)
    as folder/model.safetensors."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.safetensors"
    path.write_bytes(starting_weights("random", architecture, len(CHESTXRAY14_LABELS), seed, cache_root()).data)
    return path


def registered_model(weights: Path, name: str = "cxrbench-densenet121-null", version: int = 1,
                     aliases: tuple[str, ...] = ("champion",), image_size: int = 64,
                     architecture: str = "densenet121", sha256: str | None = None) -> RegisteredModel:
    """A RegisteredModel served by the null worker, its card holding what serving reads."""
    card = {
        "worker": "null", "architecture": architecture, "image_size": image_size,
        "labels": list(CHESTXRAY14_LABELS), "thresholds": list(THRESHOLDS),
        "weights_sha256": sha256 or hashlib.sha256(weights.read_bytes()).hexdigest(),
        "precision": "fp32", "seed": 0,
    }
    return RegisteredModel(name, version, aliases, card, weights)


class CountingRuntimes:
    """A runtime factory (local runtimes on the CPU) that keeps the client of every worker started."""

    def __init__(self) -> None:
        self.clients: list = []

    def __call__(self) -> LocalRuntime:
        counter = self

        class CountingRuntime(LocalRuntime):
            @contextmanager
            def start(self, spec: WorkerSpec, log_path: Path) -> Iterator[RunningWorker]:
                with super().start(spec, log_path) as worker:
                    counter.clients.append(worker.client)
                    yield worker

        runtime = CountingRuntime(cache_root())
        runtime.use_device("cpu")
        return runtime

    @property
    def starts(self) -> int:
        """How many workers were started."""
        return len(self.clients)

    def pid(self, index: int = -1) -> int:
        """The process id of the `index`-th worker started (the last by default), as it reports it."""
        return int(self.clients[index].metadata().pid)
