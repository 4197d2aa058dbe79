"""A backend that does nothing: zero loss, zero logits, no parameters.

FeatureMaps, without a network but deterministic, so the harness's CAM path can be tested without a
framework: the features are the pixels / 255 averaged over 32 x 32 blocks (h = w = ceil(size / 32),
the last block padded by repeating the edge pixels), the same map in each of C channels, C being the
second dimension of the head weight it holds (`fc.weight`, else `classifier.weight`: the starting
weights once SetWeights has sent them; C = 1 holding neither). Its logits are Predict's, zero, as the
contract asks of every worker ("the logits of the same forward pass"; the harness checks it before
saving maps): its head computes nothing, whatever weights it holds, so for this worker alone a CAM
made with the held head does not average to the logit. Zero logits keep the harness's own checks
(validation loss log(2), no churn) as they are.

CXRBENCH_NULL_STEP_SECONDS (default 0) makes each train step sleep, so tests can stop a worker
in the middle of an epoch; it reaches every null worker a run starts, the one that measures the
harness's ceiling too. The option `step_seconds` (`--option null.step_seconds=0.05`) throttles
only the worker it is given to, so a test can run one well below the ceiling.
CXRBENCH_NULL_DEVICE makes it report another device (e.g. "cuda:0 (NVIDIA H200)"), so tests can
show the harness refusing workers that run under unequal conditions.
CXRBENCH_NULL_ENERGY_JOULES_PER_STEP (unset: no counter, as on a CPU) makes it report a device energy
counter that grows by that many joules per train step, so the harness's energy path is tested
without a GPU.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np

from cxrbench_worker.backend import PRECISIONS, Backend, BackendMetadata, ConfiguredModel, ModelSpec
from cxrbench_worker.host import cpu_model
from cxrbench_worker.mixed_precision import precision_flags

_BLOCK = 32  # pixels per feature-map cell along each side (ResNet-50's and DenseNet-121's stride)


class NullBackend(Backend):
    """Receives, is checked by the SDK, and discards."""

    # It computes nothing, so any precision is honoured trivially (the data path is measured at all of them).
    precisions = PRECISIONS
    options = ("step_seconds",)

    def __init__(self) -> None:
        self._num_labels = 0
        self._step_seconds = float(os.environ.get("CXRBENCH_NULL_STEP_SECONDS", "0"))
        self._weights: dict[str, np.ndarray] = {}
        # It computes nothing, but says where it runs and with what, as any worker must for the
        # harness's check of equal conditions: the host's CPU and the threads a framework would use.
        self._device = os.environ.get("CXRBENCH_NULL_DEVICE") or f"cpu ({cpu_model()})"
        self._threads = len(os.sched_getaffinity(0))
        self._precision = "fp32"
        energy = os.environ.get("CXRBENCH_NULL_ENERGY_JOULES_PER_STEP")
        self._joules_per_step = float(energy) if energy else None
        self._steps = 0
        # Tests of lost workers: "NAME:STEP" makes the worker named NAME (this package's, or a copy's)
        # exit hard at its STEP-th training step, in every process, so every attempt of its runs fails.
        name, _, step = os.environ.get("CXRBENCH_NULL_EXIT_AT_STEP", "").partition(":")
        self._exit_at_step = int(step) if name == __name__.split(".")[0].removeprefix("cxrbench_") and step else None

    def metadata(self) -> BackendMetadata:
        return BackendMetadata(
            framework_versions={"numpy": np.__version__, "python": platform.python_version()},
            device=self._device,
            threads=self._threads,
            numerics=precision_flags(self._precision),
        )

    def configure(self, spec: ModelSpec) -> ConfiguredModel:
        self.check_spec(spec)
        self._num_labels = spec.num_labels
        self._threads = spec.threads or len(os.sched_getaffinity(0))
        self._precision = spec.numerics.precision
        if "step_seconds" in spec.options:
            try:
                self._step_seconds = float(spec.options["step_seconds"])
            except ValueError:
                raise ValueError(f"options.step_seconds: {spec.options['step_seconds']!r} is not a number") from None
        self._weights = {"fc.bias": np.zeros(spec.num_labels, dtype=np.float32)}
        return ConfiguredModel(trainable_parameters=spec.num_labels, non_trainable_parameters=0,
                               numerics=precision_flags(self._precision))

    def train_step(self, pixels: np.ndarray, labels: np.ndarray) -> float:
        if self._step_seconds:
            time.sleep(self._step_seconds)
        self._steps += 1
        if self._steps == self._exit_at_step:
            os._exit(3)  # as a crash would: no reply, no clean-up
        return float(np.log(2.0))  # BCE of a zero logit

    def synchronize(self) -> None:
        """Nothing runs asynchronously here."""

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        return np.zeros((pixels.shape[0], self._num_labels), dtype=np.float32)

    def feature_maps(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Block means of the pixels in each of the held head's channels, and Predict's zero logits."""
        n, height, width = pixels.shape
        h, w = -(-height // _BLOCK), -(-width // _BLOCK)
        padded = np.pad(pixels.astype(np.float64) / 255.0,
                        ((0, 0), (0, h * _BLOCK - height), (0, w * _BLOCK - width)), mode="edge")
        blocks = padded.reshape(n, h, _BLOCK, w, _BLOCK).mean(axis=(2, 4))
        features = np.broadcast_to(blocks[:, np.newaxis], (n, self._feature_channels(), h, w))
        return np.ascontiguousarray(features, dtype=np.float32), self.predict(pixels)

    def _feature_channels(self) -> int:
        """The second dimension of the held head weight (`fc`'s, else `classifier`'s); 1 holding neither."""
        for name in ("fc.weight", "classifier.weight"):
            weight = self._weights.get(name)
            if weight is not None:
                if weight.ndim != 2:
                    raise ValueError(f"{name}: the held head weight has shape {weight.shape}, not (L, C)")
                return int(weight.shape[1])
        return 1

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

    def energy_joules(self) -> float | None:
        """The fake counter: joules per step times the steps trained so far; None unless asked for."""
        return None if self._joules_per_step is None else self._joules_per_step * self._steps
