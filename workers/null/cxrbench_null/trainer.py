"""A backend that does nothing: zero loss, zero logits, no parameters.

CXRBENCH_NULL_STEP_SECONDS (default 0) makes each train step sleep, so tests can stop a worker
in the middle of an epoch.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np

from cxrbench_worker.backend import Backend, BackendMetadata, ConfiguredModel, ModelSpec
from cxrbench_worker.mixed_precision import precision_flags


class NullBackend(Backend):
    """Receives, is checked by the SDK, and discards."""

    precisions = ("fp32",)

    def __init__(self) -> None:
        self._num_labels = 0
        self._step_seconds = float(os.environ.get("CXRBENCH_NULL_STEP_SECONDS", "0"))
        self._weights: dict[str, np.ndarray] = {}

    def metadata(self) -> BackendMetadata:
        return BackendMetadata(
            framework_versions={"numpy": np.__version__, "python": platform.python_version()},
            device="cpu (null: no computation)",
            threads=1,
            numerics=precision_flags("fp32"),
        )

    def configure(self, spec: ModelSpec) -> ConfiguredModel:
        self._num_labels = spec.num_labels
        self._weights = {"fc.bias": np.zeros(spec.num_labels, dtype=np.float32)}
        return ConfiguredModel(trainable_parameters=spec.num_labels, non_trainable_parameters=0,
                               numerics=precision_flags("fp32"))

    def train_step(self, pixels: np.ndarray, labels: np.ndarray) -> float:
        if self._step_seconds:
            time.sleep(self._step_seconds)
        return float(np.log(2.0))  # BCE of a zero logit

    def synchronize(self) -> None:
        """Nothing runs asynchronously here."""

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        return np.zeros((pixels.shape[0], self._num_labels), dtype=np.float32)

    def set_learning_rate(self, learning_rate: float) -> None:
        pass

    def export_weights(self) -> dict[str, np.ndarray]:
        return dict(self._weights)

    def import_weights(self, tensors: dict[str, np.ndarray]) -> None:
        """Keep whatever arrives (the harness's starting weights, or a test's), to export it again."""
        if not tensors:
            raise ValueError("weights: the file holds no tensor")
        self._weights = dict(tensors)

    def export_native(self, directory: Path) -> str:
        """No framework, so no format of its own: the neutral tensors it holds, as numpy's .npz."""
        np.savez(directory / "weights.npz", **self._weights)
        return "numpy .npz (np.savez of the neutral tensors)"
