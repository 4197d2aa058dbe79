"""JAX implementation of the worker contract (`cxrbench_worker.backend.Backend`): Flax linen models,
Optax's Adam, jit-compiled steps; fp32 with full-float32 matmuls unless mixed precision is asked."""

from __future__ import annotations

import platform
import random
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from cxrbench_worker import jax_settings
from cxrbench_worker.backend import Backend, BackendMetadata, ConfiguredModel, DeviceMemory, ModelSpec
from cxrbench_worker.mixed_precision import COMPUTE_DTYPES, precision_flags

from .model import Programs, Variables, build_model, count_parameters, export_neutral, import_neutral
from .training import LossScale, TrainState, adam, make_steps, set_learning_rate


class JaxBackend(Backend):
    """Flax models trained with optax.adam under jax.jit; fp32 (no TF32) by default, bf16-mixed and
    fp16-mixed (dynamic loss scaling) on request."""

    architectures = ("resnet50", "densenet121")
    precisions = ("fp32", "bf16-mixed", "fp16-mixed")

    def __init__(self) -> None:
        self._spec: ModelSpec | None = None
        self._state: TrainState | None = None
        self._steps = None
        self._notes: dict[str, str] = {}
        self._programs: dict[tuple, Programs] = {}

    def metadata(self) -> BackendMetadata:
        """Versions, device, threads and the numerics flags as JAX has them now."""
        versions = {**jax_settings.versions(), "flax": flax.__version__, "optax": optax.__version__,
                    "numpy": np.__version__, "python": platform.python_version()}
        return BackendMetadata(versions, jax_settings.device_name(), jax_settings.thread_count(), self._numerics())

    def configure(self, spec: ModelSpec) -> ConfiguredModel:
        """Set threads and numerics, build the model from `spec.seed`, and Adam; replaces any previous model."""
        # Validate before touching global state, so a refused request leaves the worker as it was.
        self.check_spec(spec)
        jax_settings.set_threads(spec.threads)
        note = jax_settings.set_deterministic(spec.numerics.deterministic)
        self._notes = {"deterministic_note": note} if note else {}
        jax_settings.set_matmul_precision(spec.numerics.allow_tf32)
        jax_settings.use_compilation_cache()
        np.random.seed(spec.seed % 2**32)
        random.seed(spec.seed)

        programs = self._programs_for(spec)
        variables = programs.initial_variables(spec.seed)
        loss_scale = LossScale.initial() if spec.numerics.precision == "fp16-mixed" else None
        # Adam's hyperparameters live in its state, so the compiled steps serve any settings.
        self._state = TrainState(variables, adam(spec.optimizer).init(variables["params"]), loss_scale)
        self._steps = programs.steps
        self._spec = spec
        trainable, non_trainable = count_parameters(variables)
        return ConfiguredModel(trainable, non_trainable, self._numerics())

    def _programs_for(self, spec: ModelSpec) -> Programs:
        """The model and its jit-compiled functions for `spec`, kept for the next Configure of the same
        network: jax.jit compiles per function object, so a new closure would compile everything
        again (DenseNet-121's training step takes about a minute on 2 CPU cores)."""
        key = (spec.architecture, spec.num_labels, spec.numerics.precision, spec.mean, spec.std)
        if key not in self._programs:
            model = build_model(spec.architecture, spec.num_labels, jnp.dtype(COMPUTE_DTYPES[spec.numerics.precision]))
            self._programs[key] = Programs(model, make_steps(model, adam(spec.optimizer), spec))
        return self._programs[key]

    def _numerics(self) -> dict[str, str]:
        precision = self._spec.numerics.precision if self._spec is not None else "fp32"
        return {**precision_flags(precision), **jax_settings.numerics_flags(), "jit": "true", **self._notes}

    def _variables(self, method: str) -> Variables:
        return self.require_model(self._state, method).variables

    def _pixels(self, pixels: np.ndarray) -> jnp.ndarray:
        return jnp.asarray(self.check_pixels(pixels, self._spec.image_size))

    def train_step(self, pixels: np.ndarray, labels: np.ndarray) -> float:
        """One Adam step in train mode; returns the mean BCE-with-logits loss once it is done."""
        state = self.require_model(self._state, "train_step")
        pixels = self.check_pixels(pixels, self._spec.image_size)
        expected = (pixels.shape[0], self._spec.num_labels)
        if labels.shape != expected:
            raise ValueError(f"labels must have shape {expected}, got {labels.shape}")
        train, _, _ = self._steps
        self._state = None  # the step consumes (donates) the old state: never left pointing at it
        self._state, loss = train(state, jnp.asarray(pixels), jnp.asarray(labels))
        return float(loss)

    def synchronize(self) -> None:
        """Wait for every computation JAX has dispatched so far."""
        if self._state is not None:
            jax.block_until_ready(self._state.variables)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Eval-mode logits, float32 (N, num_labels)."""
        variables = self._variables("predict")
        _, predict, _ = self._steps
        return np.asarray(predict(variables, self._pixels(pixels)), dtype=np.float32)

    def feature_maps(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Eval-mode final feature maps float32 (N, C, h, w), transposed from NHWC on the device, and
        the logits of the same pass, compiled as `predict` is."""
        variables = self._variables("feature_maps")
        _, _, feature_maps = self._steps
        features, logits = feature_maps(variables, self._pixels(pixels))
        return np.asarray(features, dtype=np.float32), np.asarray(logits, dtype=np.float32)

    def set_learning_rate(self, learning_rate: float) -> None:
        """Set Adam's learning rate for the following steps (held in its state: no recompilation)."""
        state = self.require_model(self._state, "set_learning_rate")
        set_learning_rate(state.opt_state, self.check_learning_rate(learning_rate))

    def export_weights(self) -> dict[str, np.ndarray]:
        """Parameters and BatchNorm running stats, torchvision names and layouts, float32 copies."""
        return export_neutral(self._variables("export_weights"))

    def import_weights(self, tensors: dict[str, np.ndarray]) -> None:
        """Load neutral weights; ValueError naming missing, unexpected or misshapen tensors.
        Adam's state is left untouched, as in the PyTorch worker."""
        state = self.require_model(self._state, "import_weights")
        self._state = state._replace(variables=import_neutral(state.variables, tensors))

    def export_native(self, directory: Path) -> str:
        """The variables (params and batch_stats, not Adam's state) as Flax's msgpack bytes."""
        variables = jax.device_get(self._variables("export_native"))
        (directory / "variables.msgpack").write_bytes(serialization.to_bytes(variables))
        return "flax.serialization.to_bytes(variables) .msgpack"

    def device_memory(self, reset_peak: bool) -> DeviceMemory:
        """JAX's GPU allocator's bytes (see jax_settings.device_memory: its peak cannot be reset)."""
        return jax_settings.device_memory()
