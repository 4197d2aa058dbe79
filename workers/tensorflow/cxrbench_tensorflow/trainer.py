"""TensorFlow implementation of the worker contract (`cxrbench_worker.backend.Backend`), no Keras.

Mixed precision: the tf.nn model computes in bfloat16 or float16 on float32 variables (see
`layers`), fp16 with the dynamic loss scaling of `loss_scale`; cxrbench_worker.mixed_precision
says what every worker does alike.
"""

from __future__ import annotations

import os
import platform
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from cxrbench_worker import tensorflow_settings
from cxrbench_worker.backend import (
    Backend,
    BackendMetadata,
    ConfiguredModel,
    DeviceMemory,
    ModelSpec,
    check_num_labels,
)
from cxrbench_worker.host import cpu_model
from cxrbench_worker.mixed_precision import COMPUTE_DTYPES, precision_flags
from cxrbench_worker.tensorflow_settings import ThreadPoolsFixed

from .adam import TorchAdam
from .loss_scale import DynamicLossScale
from .model import Network, build_model, count_parameters, export_neutral, import_neutral


class TensorFlowBackend(Backend):
    """tf.nn models trained with TF's Adam kernel under tf.function, fp32 unless asked otherwise
    (bf16-mixed, fp16-mixed with dynamic loss scaling), XLA on request."""

    architectures = ("resnet50", "densenet121")
    precisions = ("fp32", "bf16-mixed", "fp16-mixed")
    options = ("jit_compile",)

    def __init__(self) -> None:
        # Nothing here may start TF's runtime: thread counts can only be set before that.
        self._spec: ModelSpec | None = None
        self._model: Network | None = None
        self._adam: TorchAdam | None = None
        self._train = None
        self._predict = None
        self._feature_maps = None
        self._jit_compile = False
        self._threads_note = ""
        self._loss_scale: DynamicLossScale | None = None
        # Before anything starts TF's runtime: afterwards a GPU's allocator is fixed.
        self._memory_growth = tensorflow_settings.enable_memory_growth()

    def metadata(self) -> BackendMetadata:
        """Versions, device, threads and the numerics flags as TF currently has them."""
        versions = {"tensorflow": tf.__version__, "numpy": np.__version__,
                    "python": platform.python_version()}
        device = tensorflow_settings.gpu_device()
        if device is not None:
            versions.update(tensorflow_settings.cuda_versions())
        else:
            device = f"cpu ({cpu_model()})"
        return BackendMetadata(versions, device, tensorflow_settings.intra_op_threads(), self._numerics())

    def configure(self, spec: ModelSpec) -> ConfiguredModel:
        """Seed, set numerics and threads, build the model and Adam; replaces any previous model."""
        # Validate before touching global state, so a refused request leaves the worker as it was.
        self.check_spec(spec)
        jit_compile = self.boolean_option(spec.options, "jit_compile")
        check_num_labels(spec.num_labels)

        self._set_threads(spec.threads)
        tensorflow_settings.set_numerics(spec.numerics.allow_tf32, spec.numerics.deterministic)
        tf.random.set_seed(spec.seed)
        np.random.seed(spec.seed % 2**32)
        random.seed(spec.seed)

        # XLA is opt-in: on 2 CPU cores it trained ResNet-50 at ~5 img/s against ~60 without it.
        self._jit_compile = jit_compile
        compute_dtype = tf.as_dtype(COMPUTE_DTYPES[spec.numerics.precision])
        model = build_model(spec.architecture, spec.num_labels, spec.seed, spec.mean, spec.std,
                            for_xla=self._jit_compile, compute_dtype=compute_dtype)
        self._adam = TorchAdam(model.trainable, spec.optimizer)
        self._loss_scale = DynamicLossScale() if spec.numerics.precision == "fp16-mixed" else None
        self._model, self._spec = model, spec
        self._train, self._predict, self._feature_maps = self._compile(model, self._adam, spec)
        trainable, non_trainable = count_parameters(model)
        return ConfiguredModel(trainable, non_trainable, self._numerics())

    def _compile(self, model: Network, adam: TorchAdam,
                 spec: ModelSpec) -> tuple[Callable, Callable, Callable]:
        """The training step, prediction and feature maps as tf.functions; a None batch dimension
        means a short last batch does not retrace. Each traces on its first call only."""
        size = spec.image_size
        pixels_spec = tf.TensorSpec([None, size, size], tf.uint8)
        labels_spec = tf.TensorSpec([None, spec.num_labels], tf.uint8)
        scaler = self._loss_scale

        @tf.function(input_signature=[pixels_spec, labels_spec], jit_compile=self._jit_compile)
        def train(pixels: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                logits = model(pixels, training=True)  # float32 whatever the compute dtype
                loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
                    labels=tf.cast(labels, tf.float32), logits=logits))
                objective = loss if scaler is None else scaler.scaled(loss)
            gradients = tape.gradient(objective, adam.variables_to_train)
            if scaler is None:
                adam.apply(gradients)
            else:
                scaler.apply(gradients, adam.apply)
            return loss  # of the batch before the update, unscaled, as torch reports it

        @tf.function(input_signature=[pixels_spec], jit_compile=self._jit_compile)
        def predict(pixels: tf.Tensor) -> tf.Tensor:
            return model(pixels, training=False)

        @tf.function(input_signature=[pixels_spec], jit_compile=self._jit_compile)
        def feature_maps(pixels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return model.features_and_logits(pixels)

        return train, predict, feature_maps

    def _set_threads(self, threads: int) -> None:
        """Apply `threads`, or note (and report) that TF's runtime keeps its first count."""
        try:
            if tensorflow_settings.set_thread_pools(threads):
                self._threads_note = ""
        except ThreadPoolsFixed:
            # TF fixes its thread pools when its runtime starts (the first Configure did that).
            self._threads_note = (f"requested {threads} threads, kept {tensorflow_settings.intra_op_threads()}: "
                                  "TF's runtime was already initialised; start a new worker")

    def _numerics(self) -> dict[str, str]:
        state = tensorflow_settings.numerics_state()
        precision = self._spec.numerics.precision if self._spec is not None else "fp32"
        numerics = {
            **precision_flags(precision),
            "allow_tf32": str(state.allow_tf32).lower(),
            "deterministic_ops": str(state.op_determinism).lower(),
            "deterministic": str(state.op_determinism).lower(),
            "cudnn_autotune": state.cudnn_autotune,
            "gpu_memory_growth": self._memory_growth,
            "jit_compile": str(self._jit_compile).lower(),
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        }
        if self._threads_note:
            numerics["threads_note"] = self._threads_note
        return numerics

    def _require(self, method: str) -> Network:
        return self.require_model(self._model, method)

    def _pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self.check_pixels(pixels, self._spec.image_size)

    def train_step(self, pixels: np.ndarray, labels: np.ndarray) -> float:
        """One Adam step in train mode; returns the mean BCE-with-logits loss once it is done."""
        self._require("train_step")
        pixels = self._pixels(pixels)
        expected = (pixels.shape[0], self._spec.num_labels)
        if labels.shape != expected or labels.dtype != np.uint8:
            raise ValueError(f"labels must be uint8 {expected}, got {labels.dtype} {labels.shape}")
        return float(self._train(pixels, labels).numpy())

    def synchronize(self) -> None:
        """Wait for every op TF has queued on its devices (see tensorflow_settings.synchronize)."""
        tensorflow_settings.synchronize()

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Eval-mode logits, float32 (N, num_labels)."""
        self._require("predict")
        return self._predict(self._pixels(pixels)).numpy().astype(np.float32, copy=False)

    def feature_maps(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Eval-mode final feature maps float32 (N, C, h, w), transposed from TF's NHWC, and the
        logits of the same pass (N, num_labels), compiled as `predict` is."""
        self._require("feature_maps")
        features, logits = self._feature_maps(self._pixels(pixels))
        return features.numpy().astype(np.float32, copy=False), logits.numpy().astype(np.float32, copy=False)

    def set_learning_rate(self, learning_rate: float) -> None:
        """Set Adam's learning rate for the following steps (a variable: no retracing)."""
        self._require("set_learning_rate")
        self._adam.learning_rate.assign(self.check_learning_rate(learning_rate))

    def export_weights(self) -> dict[str, np.ndarray]:
        """Parameters and BatchNorm running stats, torchvision names and layouts, float32 copies."""
        return export_neutral(self._require("export_weights"))

    def import_weights(self, tensors: dict[str, np.ndarray]) -> None:
        """Load neutral weights; ValueError naming missing, unexpected or misshapen tensors.

        Adam's state is left untouched, as in the PyTorch worker.
        """
        import_neutral(self._require("import_weights"), tensors)

    def export_native(self, directory: Path) -> str:
        """Every model variable (BatchNorm statistics too, not Adam's slots) as a tf.train.Checkpoint."""
        tf.train.Checkpoint(model=self._require("export_native")).write(str(directory / "model"))
        return "tf.train.Checkpoint (model variables)"

    def device_memory(self, reset_peak: bool) -> DeviceMemory:
        """TF's GPU allocator's bytes in use; nothing on CPU, nor before Configure (reading the
        allocator starts TF's runtime, which would fix the thread pools Configure still sets)."""
        return tensorflow_settings.device_memory(reset_peak, started=self._model is not None)
