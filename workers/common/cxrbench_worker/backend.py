"""The interface a framework worker implements.

A backend knows its framework and nothing of gRPC: the servicer in `servicer.py` validates every
request, decodes tensors and maps exceptions to status codes, then calls these methods with plain
numpy arrays. Adding a framework means writing one `Backend` subclass in
`workers/<name>/cxrbench_<name>/trainer.py`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from cxrbench_worker.energy import gpu_energy_joules

ARCHITECTURES = ("resnet50", "densenet121")
# fp32 (TF32 off) by default; "-mixed": the network computes in bfloat16 / float16 on float32 master
# weights (cxrbench_worker.mixed_precision says what every worker does alike, and where they differ).
PRECISIONS = ("fp32", "bf16-mixed", "fp16-mixed")

ModelT = TypeVar("ModelT")  # whatever a backend builds: a torch Module, a tf.Module, a Keras model


class UnsupportedOption(Exception):
    """An option the backend does not implement; the servicer answers UNIMPLEMENTED.

    `field` names the request field (e.g. "numerics.precision") so the error says what to change.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def check_architecture(architecture: str, known: Iterable[str]) -> None:
    """UnsupportedOption on the field "architecture" unless `architecture` is one of `known`."""
    names = tuple(known)
    if architecture not in names:
        raise UnsupportedOption("architecture", f"unknown architecture {architecture!r} (known: {', '.join(names)})")


def check_num_labels(num_labels: int) -> None:
    """ValueError unless the head has at least one logit."""
    if num_labels < 1:
        raise ValueError(f"num_labels must be at least 1, got {num_labels}")


@dataclass(frozen=True)
class AdamSettings:
    """Adam as the harness asks for it (PyTorch's definition: L2 weight decay added to the gradient)."""

    learning_rate: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    weight_decay: float = 0.0


@dataclass(frozen=True)
class Numerics:
    """Requested numerics. fp32 with TF32 off is the default for every framework (DESIGN invariant 7)."""

    precision: str = "fp32"
    allow_tf32: bool = False
    deterministic: bool = True


@dataclass(frozen=True)
class ModelSpec:
    """Everything a backend needs to build and train one model."""

    architecture: str
    num_labels: int
    image_size: int
    seed: int
    optimizer: AdamSettings = field(default_factory=AdamSettings)
    numerics: Numerics = field(default_factory=Numerics)
    # Applied on the device after pixels/255 and expansion of grayscale to 3 channels.
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    # Intra-op threads; 0 keeps the framework's default.
    threads: int = 0
    # Framework-specific switches (e.g. {"jit_compile": "true"}); keys are in Backend.options.
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ConfiguredModel:
    """What the backend built, as the framework itself counts and reports it."""

    trainable_parameters: int
    non_trainable_parameters: int
    # Effective numerics as read back from the framework, e.g. {"allow_tf32": "false"}.
    numerics: dict[str, str]


@dataclass(frozen=True)
class BackendMetadata:
    """Facts about the running worker, read at run time (never hard-coded)."""

    framework_versions: dict[str, str]
    device: str
    threads: int
    numerics: dict[str, str]


@dataclass(frozen=True)
class DeviceMemory:
    """Accelerator memory as the framework's allocator counts it, bytes; `reported` False on CPU."""

    device: str = "cpu"
    reported: bool = False
    peak_bytes: int = 0  # since the worker started or the last reset
    current_bytes: int = 0
    total_bytes: int = 0  # 0 where the framework cannot tell


class Backend(ABC):
    """One framework's implementation of the worker contract.

    Arrays crossing this interface:
      pixels: uint8, shape (N, H, W), grayscale, row-major.
      labels: uint8, shape (N, num_labels), 0 or 1.
      logits: float32, shape (N, num_labels).
      features: float32, shape (N, C, h, w), channels first (final feature maps, for CAMs).
    Neutral weights: torchvision's parameter and buffer names and layouts, float32 numpy arrays,
    BatchNorm `num_batches_tracked` excluded.
    """

    #: Architectures this backend can build (subset of ARCHITECTURES).
    architectures: tuple[str, ...] = ARCHITECTURES
    #: Precisions this backend can run (subset of PRECISIONS).
    precisions: tuple[str, ...] = ("fp32",)
    #: Keys of ModelSpec.options this backend understands; the servicer refuses any other.
    options: tuple[str, ...] = ()

    def check_spec(self, spec: ModelSpec) -> None:
        """UnsupportedOption unless this backend offers the spec's architecture and precision.

        The servicer already refuses these over gRPC; backends call this first in `configure` so a
        backend used directly refuses them the same way, before touching any global state.
        """
        check_architecture(spec.architecture, self.architectures)
        if spec.numerics.precision not in self.precisions:
            allowed = ", ".join(self.precisions)
            raise UnsupportedOption("numerics.precision",
                                    f"precision {spec.numerics.precision!r} is not offered (allowed: {allowed})")

    @staticmethod
    def check_pixels(pixels: np.ndarray, image_size: int) -> np.ndarray:
        """`pixels` if they are uint8 (N, image_size, image_size); ValueError saying what they are otherwise."""
        if pixels.ndim != 3 or pixels.dtype != np.uint8 or pixels.shape[1:] != (image_size, image_size):
            raise ValueError(f"pixels must be uint8 (N, {image_size}, {image_size}), got {pixels.dtype} {pixels.shape}")
        return pixels

    @staticmethod
    def check_learning_rate(learning_rate: float, field: str = "learning_rate") -> float:
        """`learning_rate` as a float if it is finite and > 0; ValueError naming `field` otherwise.

        The servicer checks every rate it receives; backends check again in `set_learning_rate` so
        a backend used directly refuses the same rates."""
        if not (math.isfinite(learning_rate) and learning_rate > 0):
            raise ValueError(f"{field}: {learning_rate} must be finite and > 0")
        return float(learning_rate)

    @staticmethod
    def boolean_option(options: Mapping[str, str], key: str, default: bool = False) -> bool:
        """The switch `options[key]` ("true" or "false", any case), `default` when absent.

        The servicer has refused unknown keys already; a known key with another value is a
        ValueError naming the option (INVALID_ARGUMENT)."""
        value = options.get(key)
        if value is None:
            return default
        if value.lower() not in ("true", "false"):
            raise ValueError(f"options.{key}: must be 'true' or 'false', got {value!r}")
        return value.lower() == "true"

    @staticmethod
    def require_model(model: ModelT | None, method: str) -> ModelT:
        """`model` once Configure has built it; RuntimeError (FAILED_PRECONDITION) before that."""
        if model is None:
            raise RuntimeError(f"Configure must be called before {method}")
        return model

    @abstractmethod
    def metadata(self) -> BackendMetadata:
        """Framework versions, device, thread count and numerics flags of this process."""

    @abstractmethod
    def configure(self, spec: ModelSpec) -> ConfiguredModel:
        """Build the model and optimizer from `spec`, seeded; replaces any previous model."""

    @abstractmethod
    def train_step(self, pixels: np.ndarray, labels: np.ndarray) -> float:
        """One optimizer step on one batch in training mode; returns the mean BCE-with-logits loss
        (which, read back as a float, also waits for the step; the servicer's timing relies on
        `synchronize` all the same)."""

    @abstractmethod
    def synchronize(self) -> None:
        """Wait until the device has finished all work queued so far; a no-op where nothing runs
        asynchronously (a CPU). The servicer calls it before starting and before stopping the clock
        around timed work, so compute_seconds covers the work and only the work."""

    @abstractmethod
    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Eval-mode logits for one batch, float32 (N, num_labels). Never a metric."""

    def feature_maps(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Eval-mode final feature maps and logits of one forward pass, in the precision `predict` runs.

        features: float32 (N, C, h, w), channels first whatever the framework's layout: the tensor
        global average pooling reduces (ResNet-50 after layer4, DenseNet-121 after relu(features(x))).
        logits: float32 (N, num_labels), the head on the pooled features: `predict`'s logits. The
        harness computes class activation maps from these; never a map or a metric here.

        Every worker of this project implements it (the conformance suite checks); the default, for a
        backend written before the FeatureMaps RPC, answers UNIMPLEMENTED, so such a backend still
        trains and predicts.
        """
        raise UnsupportedOption("FeatureMaps", f"{type(self).__name__} does not return feature maps")

    @abstractmethod
    def set_learning_rate(self, learning_rate: float) -> None:
        """Set the optimizer's learning rate for the following steps."""

    @abstractmethod
    def export_weights(self) -> dict[str, np.ndarray]:
        """All parameters and BatchNorm running statistics in the neutral format."""

    @abstractmethod
    def import_weights(self, tensors: dict[str, np.ndarray]) -> None:
        """Load neutral weights; raises ValueError naming missing, unexpected or misshapen tensors."""

    @abstractmethod
    def export_native(self, directory: Path) -> str:
        """Save the current model (weights and buffers, no optimizer state) into the empty folder
        `directory` the way the framework's users usually do; return the format in words.

        The caller measures and deletes what was written. Call only once Configure has built a model.
        """

    def device_memory(self, reset_peak: bool) -> DeviceMemory:
        """The accelerator's peak and current memory as the framework reports it; then, if
        `reset_peak`, reset its peak so the next reading covers only what follows.

        The default reports nothing, as for a CPU; backends whose framework can tell override it.
        It is called before Configure too, so it must not start anything a Configure still sets.
        """
        return DeviceMemory()

    def energy_joules(self) -> float | None:
        """The cumulative energy counter of the GPU this backend computes on, joules; None on CPU
        or where the hardware does not tell (see cxrbench_worker.energy).

        The default reads NVML for the CUDA device that `device_memory` names ("cuda:..." or
        "gpu:..."); a backend that knows its device's UUID may override it to pass that UUID.
        """
        if self.device_memory(reset_peak=False).device.split(":")[0].lower() not in ("cuda", "gpu"):
            return None
        return gpu_energy_joules()
