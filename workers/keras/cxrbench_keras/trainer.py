"""Keras 3 implementation of the worker contract (`cxrbench_worker.backend.Backend`).

Trained through Keras's own API (compile + train_on_batch), so what is measured is Keras as its
users run it, on the backend named by KERAS_BACKEND: TensorFlow for the worker `keras`, JAX and torch
for its variants `keras[jax]` and `keras[torch]` (worker.toml). The backend's own settings (threads,
TF32, determinism, device, memory) are set and read in `backends/on_<backend>.py`. Mixed precision is
Keras's own: the dtype policies "mixed_bfloat16" and "mixed_float16", the latter with a
LossScaleOptimizer (cxrbench_worker.mixed_precision says what every worker does alike).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# Keras picks its backend once, at import; worker.toml's [environment] sets it too.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from cxrbench_worker.backend import (  # noqa: E402
    Backend,
    BackendMetadata,
    ConfiguredModel,
    DeviceMemory,
    ModelSpec,
    UnsupportedOption,
)
from cxrbench_worker.host import cpu_model  # noqa: E402
from cxrbench_worker.mixed_precision import (  # noqa: E402
    LOSS_SCALE_GROWTH_INTERVAL,
    LOSS_SCALE_INITIAL,
    precision_flags,
)
from cxrbench_worker.tensorflow_settings import ThreadPoolsFixed  # noqa: E402

from . import runtime  # noqa: E402
from .model import NeutralModel, build_model, count_parameters  # noqa: E402

_POLICIES = {"fp32": "float32", "bf16-mixed": "mixed_bfloat16", "fp16-mixed": "mixed_float16"}


class KerasBackend(Backend):
    """torchvision's networks rebuilt in Keras, trained with keras.optimizers.Adam, fp32 by default."""

    architectures = ("resnet50", "densenet121")
    precisions = ("fp32", "bf16-mixed", "fp16-mixed")
    #: "jit_compile": "true" compiles the train and predict steps (XLA on TensorFlow and JAX,
    #: torch.compile on torch); the default is the backend's JIT_COMPILE_DEFAULT ("false" on
    #: TensorFlow and torch, "true" on JAX, where Keras always compiles unless told not to).
    options = ("jit_compile",)

    def __init__(self) -> None:
        self._spec: ModelSpec | None = None
        self._net: NeutralModel | None = None
        self._settings = runtime.backend_settings()
        self._jit_compile = bool(self._settings.JIT_COMPILE_DEFAULT)
        self._notes: dict[str, str] = {}
        # Before anything starts the framework's runtime (TF's GPU allocator, XLA's flags).
        self._settings.prepare()

    def metadata(self) -> BackendMetadata:
        """Versions, device, threads and the numerics flags as the backend has them now."""
        backend_versions, gpu = self._settings.versions_and_device()
        versions = {"keras": keras.__version__, "keras_backend": runtime.backend_name(),
                    **backend_versions, "numpy": np.__version__,
                    "python": platform.python_version()}
        device = gpu or f"cpu ({cpu_model()})"
        return BackendMetadata(versions, device, self._settings.thread_count(), self._numerics())

    def configure(self, spec: ModelSpec) -> ConfiguredModel:
        """Seed, set numerics and threads, build the model and compile it; replaces any previous one."""
        # Validate before touching global state, so a refused request leaves the worker as it was.
        self.check_spec(spec)
        precision = spec.numerics.precision
        if spec.optimizer.weight_decay != 0:
            # PyTorch's Adam weight_decay is L2 added to the gradient; Keras's is decoupled (AdamW).
            # An L2 loss term would be faithful for the update but would change the loss Keras
            # reports, so rather than train something else under the same name, it is refused.
            raise UnsupportedOption("optimizer.weight_decay",
                                    "PyTorch's coupled L2 weight decay has no Keras Adam "
                                    "equivalent (Keras's is decoupled, AdamW); use 0")
        jit_compile = self.boolean_option(spec.options, "jit_compile", self._settings.JIT_COMPILE_DEFAULT)
        conflict = self._settings.jit_conflict(jit_compile, spec.numerics.deterministic)
        if conflict is not None:
            raise UnsupportedOption("options.jit_compile", conflict)
        try:
            self._settings.set_threads(spec.threads)
        except ThreadPoolsFixed as error:
            raise UnsupportedOption("threads", str(error)) from None

        # clear_session drops the previous model's graph state; then seed and policy for the new one.
        keras.backend.clear_session()
        keras.utils.set_random_seed(spec.seed)
        self._notes = self._settings.set_numerics(spec.numerics.allow_tf32, spec.numerics.deterministic)
        keras.config.set_dtype_policy(_POLICIES[precision])
        net = build_model(spec.architecture, spec.num_labels, spec.image_size, spec.mean, spec.std)
        adam = spec.optimizer
        # Keras's Adam adds epsilon to sqrt(v) and folds the bias corrections into the step size;
        # torch adds it to sqrt(v_hat). Keras's step equals torch's with eps / sqrt(1 - beta2^t),
        # which differs only where sqrt(v_hat) is near eps (about 1e-8): a tiny, documented gap.
        optimizer = keras.optimizers.Adam(learning_rate=adam.learning_rate, beta_1=adam.beta1,
                                          beta_2=adam.beta2, epsilon=adam.epsilon)
        if precision == "fp16-mixed":
            # Keras would wrap it anyway (initial scale 2^15); 2^16 matches torch's GradScaler.
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=LOSS_SCALE_INITIAL,
                                                            dynamic_growth_steps=LOSS_SCALE_GROWTH_INTERVAL)
        # jit_compile defaults to "auto", which may turn XLA on: it is always set explicitly.
        net.model.compile(optimizer=optimizer,
                          loss=keras.losses.BinaryCrossentropy(from_logits=True),
                          jit_compile=jit_compile)
        # The feature-map model predicts as the compiled model does (XLA or not); it needs no compile.
        net.feature_model.jit_compile = net.model.jit_compile
        # Read back: Keras may decline XLA for a model (model_supports_jit), so report what it does.
        self._net, self._spec, self._jit_compile = net, spec, bool(net.model.jit_compile)
        trainable, non_trainable = count_parameters(net.model)
        return ConfiguredModel(trainable, non_trainable, self._numerics())

    def _numerics(self) -> dict[str, str]:
        precision = self._spec.numerics.precision if self._spec is not None else "fp32"
        # The built model's policy: Keras keeps the global one per thread, and gRPC answers on several.
        policy = self._net.model.dtype_policy if self._net is not None else keras.config.dtype_policy()
        return {**precision_flags(precision), "keras_backend": runtime.backend_name(),
                "dtype_policy": policy.name, **self._settings.numerics_flags(),
                "jit_compile": str(self._jit_compile).lower(), **self._notes}

    def _require(self, method: str) -> NeutralModel:
        return self.require_model(self._net, method)

    def _pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self.check_pixels(pixels, self._spec.image_size)

    def train_step(self, pixels: np.ndarray, labels: np.ndarray) -> float:
        """One Adam step in training mode; returns this batch's mean BCE-with-logits loss.

        Keras computes the loss in the forward pass, before the update (as torch does). Its loss
        tracker is reset first: Keras 3.14's train_on_batch returns the mean since the last reset
        (found by `--workers keras@3.14.0,keras@3.15.1`: equal weights, different losses), 3.15's
        resets by itself; so every version returns this batch's loss alone. The result is fetched
        to the host, so the step has finished when this returns.
        """
        net = self._require("train_step")
        x = self._pixels(pixels)
        expected = (x.shape[0], self._spec.num_labels)
        if labels.shape != expected:
            raise ValueError(f"labels must have shape {expected}, got {labels.shape}")
        net.model.reset_metrics()
        loss = net.model.train_on_batch(x, labels.astype(np.float32))
        return float(loss)

    def synchronize(self) -> None:
        """Wait for the backend's devices (each backend module's synchronize)."""
        self._settings.synchronize()

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Eval-mode logits (BatchNorm on moving statistics), float32 (N, num_labels).

        Compiled (XLA: always on JAX), the logits come from the feature-map model's program, its maps
        dropped: XLA fuses a program with the maps as an extra output otherwise than one without, and
        in bf16-mixed the two programs' logits differed by 0.3% on JAX, where FeatureMaps must answer
        with Predict's logits (the harness refuses a run's maps beyond 0.1%). The extra output costs
        a transpose of the final maps, small beside the network. Eager, the two models run the same ops.
        """
        net = self._require("predict")
        if self._jit_compile:
            _, logits = net.feature_model.predict_on_batch(self._pixels(pixels))
        else:
            logits = net.model.predict_on_batch(self._pixels(pixels))
        return np.asarray(logits, dtype=np.float32)

    def feature_maps(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Eval-mode final feature maps float32 (N, C, h, w) and logits (N, num_labels) of one pass
        through the feature-map model, which shares every layer with the trained one."""
        net = self._require("feature_maps")
        features, logits = net.feature_model.predict_on_batch(self._pixels(pixels))
        return np.asarray(features, dtype=np.float32), np.asarray(logits, dtype=np.float32)

    def set_learning_rate(self, learning_rate: float) -> None:
        """Assign the optimizer's learning-rate variable: no rebuild, no retrace."""
        net = self._require("set_learning_rate")
        net.model.optimizer.learning_rate.assign(self.check_learning_rate(learning_rate))

    def export_weights(self) -> dict[str, np.ndarray]:
        """Parameters and BatchNorm moving stats, torchvision names and layouts, float32 copies."""
        return self._require("export_weights").export_weights()

    def import_weights(self, tensors: dict[str, np.ndarray]) -> None:
        """Load neutral weights; ValueError naming missing, unexpected or misshapen tensors.

        Adam's state is left untouched, as in the PyTorch worker.
        """
        self._require("import_weights").import_weights(tensors)

    def export_native(self, directory: Path) -> str:
        """The model as a .keras archive (config and weights) written by model.save.

        model.save on the compiled model would add Adam's slots (three times the size once a step
        has run), which no other worker writes. So the archive is saved from an uncompiled
        functional model over the same layers: no copy of the weights, no optimizer.
        """
        model = self._require("export_native").model
        keras.Model(model.inputs, model.outputs, name=model.name).save(directory / "model.keras")
        return "Keras .keras (model.save, without the optimizer)"

    def device_memory(self, reset_peak: bool) -> DeviceMemory:
        """GPU memory as the Keras backend's framework counts it; nothing on CPU."""
        return self._settings.device_memory(reset_peak, started=self._net is not None)
