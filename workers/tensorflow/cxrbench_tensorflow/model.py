"""ResNet-50 (v1.5) and DenseNet-121 as torchvision defines them, written with `tf.nn` ops.

No Keras: the networks are `tf.Module`s whose variables carry torchvision's `state_dict()` names,
so the neutral weights are those names with torch's layouts (OIHW convs, (out, in) linears).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from cxrbench_worker.backend import check_architecture, check_num_labels
from cxrbench_worker.neutral_weights import check_tensors

from .densenet import DenseNet121
from .layers import (
    WeightTable,
    from_neutral,
    max_pool_3x3_stride2_pad1,
    max_pool_3x3_stride2_pad1_by_slices,
    neutral_shape,
    to_neutral,
)
from .resnet import ResNet50

_BUILDERS: dict[str, Callable[..., tf.Module]] = {
    "resnet50": ResNet50,
    "densenet121": DenseNet121,
}


class Network(tf.Module):
    """One architecture plus its input normalisation; call it with uint8 (N, H, W) pixels.

    `compute_dtype` is what the layers compute in (bfloat16 or float16: mixed precision on float32
    variables); the logits come back float32 whatever it is.
    """

    def __init__(self, architecture: str, num_labels: int, seed: int,
                 mean: tuple[float, float, float], std: tuple[float, float, float],
                 for_xla: bool = False, compute_dtype: tf.DType = tf.float32) -> None:
        super().__init__(name=None)
        self.table = WeightTable(np.random.default_rng(seed))
        pool = max_pool_3x3_stride2_pad1_by_slices if for_xla else max_pool_3x3_stride2_pad1
        self.body = _BUILDERS[architecture](self.table, num_labels, pool)
        self._mean = tf.constant(mean, tf.float32)
        self._std = tf.constant(std, tf.float32)
        self.compute_dtype = compute_dtype

    def _images(self, pixels: tf.Tensor) -> tf.Tensor:
        # The same float ops as the PyTorch worker: /255, then (x - mean) / std per channel; the
        # broadcast against 3 channel statistics expands grayscale to RGB.
        x = tf.cast(pixels, tf.float32) / 255.0
        x = (x[..., tf.newaxis] - self._mean) / self._std
        return tf.cast(x, self.compute_dtype)

    def __call__(self, pixels: tf.Tensor, training: bool) -> tf.Tensor:
        return tf.cast(self.body(self._images(pixels), training), tf.float32)

    def features_and_logits(self, pixels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Eval mode: the final feature maps, float32 NCHW (torchvision's layout), and the logits of
        the same pass, float32; the body's own features and head, so the logits are `__call__`'s."""
        features = self.body.features(self._images(pixels), False)
        logits = self.body.head(features)
        return tf.transpose(tf.cast(features, tf.float32), [0, 3, 1, 2]), tf.cast(logits, tf.float32)

    @property
    def trainable(self) -> list[tf.Variable]:
        """The trainable variables in torchvision's parameter order."""
        return [variable for variable, _ in self.table.entries.values() if variable.trainable]


def build_model(architecture: str, num_labels: int, seed: int,
                mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
                std: tuple[float, float, float] = (0.229, 0.224, 0.225),
                for_xla: bool = False, compute_dtype: tf.DType = tf.float32) -> Network:
    """Build `architecture` with a `num_labels`-logit head, initialised like torchvision from `seed`.

    `for_xla` swaps the max-pool for an equivalent that XLA can differentiate deterministically;
    `compute_dtype` other than float32 runs the layers in mixed precision (see Network).

    Raises UnsupportedOption for an unknown architecture, ValueError for num_labels < 1.
    """
    check_architecture(architecture, _BUILDERS)
    check_num_labels(num_labels)
    return Network(architecture, num_labels, seed, mean, std, for_xla, compute_dtype)


def count_parameters(model: Network) -> tuple[int, int]:
    """(trainable, non_trainable) element counts of the model's variables.

    Non-trainable are the BatchNorm running means and variances, as torchvision counts its buffers
    (minus `num_batches_tracked`, which no other framework has).
    """
    trainable = non_trainable = 0
    for variable, _ in model.table.entries.values():
        size = int(np.prod(variable.shape))
        if variable.trainable:
            trainable += size
        else:
            non_trainable += size
    return trainable, non_trainable


def export_neutral(model: Network) -> dict[str, np.ndarray]:
    """Every variable under its torchvision name and layout, as float32 copies."""
    return {name: to_neutral(variable.numpy(), layout)
            for name, (variable, layout) in model.table.entries.items()}


def import_neutral(model: Network, tensors: dict[str, np.ndarray]) -> None:
    """Assign neutral weights; ValueError naming missing, unexpected or misshapen tensors.

    Nothing is assigned unless every tensor matches, so a refused import leaves the model as it was.
    """
    entries = model.table.entries
    expected = {name: neutral_shape(variable.shape, layout)
                for name, (variable, layout) in entries.items()}
    check_tensors(expected, tensors)
    for name, (variable, layout) in entries.items():
        variable.assign(from_neutral(tensors[name], layout))
