"""Convolution, BatchNorm and Linear from `tf.nn` ops with PyTorch's semantics, NHWC.

Every variable is registered in a `WeightTable` under its torchvision `state_dict()` name, which is
what makes the neutral weight format a plain rename plus a transpose (see `to_neutral`).

Variables are float32 (the master weights); the layers compute in the dtype of their input, casting
their weights to it, so a network fed bfloat16 or float16 activations runs mixed precision as torch's
autocast does (cxrbench_worker.mixed_precision). For float32 input every cast is the identity.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

BN_EPSILON = 1e-5  # torch.nn.BatchNorm2d default (Keras uses 1e-3, keras.applications 1.001e-5)
BN_MOMENTUM = 0.1  # torch: running = (1 - 0.1) * running + 0.1 * batch

# How a TF variable's layout relates to torchvision's tensor of the same name.
PLAIN = "plain"  # identical (BatchNorm vectors, biases)
CONV = "conv"  # TF HWIO <-> torch OIHW
LINEAR = "linear"  # TF (in, out) <-> torch (out, in)


def to_neutral(value: np.ndarray, layout: str) -> np.ndarray:
    """A TF variable's value in torchvision's layout, as a fresh contiguous float32 array."""
    if layout == CONV:
        value = value.transpose(3, 2, 0, 1)
    elif layout == LINEAR:
        value = value.T
    return np.array(value, dtype=np.float32, order="C", copy=True)


def neutral_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    """The shape torchvision gives the tensor whose TF variable has `shape`."""
    shape = tuple(int(size) for size in shape)
    if layout == CONV:
        return (shape[3], shape[2], shape[0], shape[1])
    if layout == LINEAR:
        return (shape[1], shape[0])
    return shape


def from_neutral(value: np.ndarray, layout: str) -> np.ndarray:
    """A torchvision-layout array in the TF variable's layout, float32."""
    value = np.asarray(value, dtype=np.float32)
    if layout == CONV:
        value = value.transpose(2, 3, 1, 0)
    elif layout == LINEAR:
        value = value.T
    return np.ascontiguousarray(value)


class WeightTable:
    """All variables of one model by torchvision name, in torchvision's `state_dict()` order."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng  # draws the initial weights, so a model is reproducible from its seed
        self.entries: dict[str, tuple[tf.Variable, str]] = {}

    def add(self, name: str, initial: np.ndarray, layout: str, trainable: bool) -> tf.Variable:
        """Create and register one float32 variable; names must be unique."""
        if name in self.entries:
            raise ValueError(f"duplicate weight name {name!r}")
        variable = tf.Variable(initial.astype(np.float32), trainable=trainable, name=name)
        self.entries[name] = (variable, layout)
        return variable


def _uniform_fan_in(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    # torch.nn.Linear's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape)


class Conv2D(tf.Module):
    """torch.nn.Conv2d without bias: symmetric zero padding, kaiming-normal init."""

    def __init__(self, table: WeightTable, name: str, in_channels: int, out_channels: int,
                 kernel: int, stride: int = 1, padding: int = 0, fan: str = "fan_out") -> None:
        super().__init__(name=None)
        fan_size = (out_channels if fan == "fan_out" else in_channels) * kernel * kernel
        initial = table.rng.normal(0.0, np.sqrt(2.0 / fan_size),
                                   size=(kernel, kernel, in_channels, out_channels))
        self.kernel = table.add(f"{name}.weight", initial, CONV, trainable=True)
        self.stride = stride
        # TF's "SAME" pads asymmetrically when strided, torch symmetrically, so padding is explicit:
        # tf.pad + VALID. (Conv2D's own EXPLICIT padding mode is ~3x slower on CPU: no oneDNN.)
        self.padding = [[0, 0], [padding, padding], [padding, padding], [0, 0]] if padding else None

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        if self.padding is not None:
            x = tf.pad(x, self.padding)
        return tf.nn.conv2d(x, tf.cast(self.kernel, x.dtype), self.stride, "VALID")


class BatchNorm(tf.Module):
    """torch.nn.BatchNorm2d: eps 1e-5, momentum 0.1, unbiased variance in the running estimate.

    Low-precision x is normalised with float32 statistics, scale and offset (the op's U type) and
    comes back in x's dtype, as torch's batch_norm does under autocast.

    Built on FusedBatchNormV3 because its training mode does exactly what torch does: it normalises
    with the biased batch variance and, with `exponential_avg_factor`, returns
    (1 - f) * running + f * batch, using the Bessel-corrected batch variance (n / (n - 1)).
    The raw op is used because tf.compat.v1's wrapper would raise epsilon to 1.001e-5.
    """

    def __init__(self, table: WeightTable, name: str, channels: int) -> None:
        super().__init__(name=None)
        self.weight = table.add(f"{name}.weight", np.ones(channels), PLAIN, trainable=True)
        self.bias = table.add(f"{name}.bias", np.zeros(channels), PLAIN, trainable=True)
        self.running_mean = table.add(f"{name}.running_mean", np.zeros(channels), PLAIN,
                                      trainable=False)
        self.running_var = table.add(f"{name}.running_var", np.ones(channels), PLAIN,
                                     trainable=False)

    def __call__(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        outputs = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=self.weight, offset=self.bias,
            mean=self.running_mean, variance=self.running_var, epsilon=BN_EPSILON,
            exponential_avg_factor=BN_MOMENTUM if training else 1.0,
            data_format="NHWC", is_training=training)
        if training:
            self.running_mean.assign(outputs.batch_mean)
            self.running_var.assign(outputs.batch_variance)
        return outputs.y


class Linear(tf.Module):
    """torch.nn.Linear: y = x W^T + b, W stored (in, out) here, torch's default init."""

    def __init__(self, table: WeightTable, name: str, in_features: int, out_features: int,
                 zero_bias: bool = False) -> None:
        super().__init__(name=None)
        rng = table.rng
        weight = _uniform_fan_in(rng, (in_features, out_features), in_features)
        bias = np.zeros(out_features) if zero_bias else _uniform_fan_in(
            rng, (out_features,), in_features)
        self.weight = table.add(f"{name}.weight", weight, LINEAR, trainable=True)
        self.bias = table.add(f"{name}.bias", bias, PLAIN, trainable=True)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return tf.matmul(x, tf.cast(self.weight, x.dtype)) + tf.cast(self.bias, x.dtype)


def max_pool_3x3_stride2_pad1(x: tf.Tensor) -> tf.Tensor:
    """torch.nn.MaxPool2d(3, 2, padding=1) on a ReLU output.

    torch pads with -inf; the input is >= 0 after ReLU and every window holds at least one real
    pixel, so zero padding gives the same maxima.
    """
    x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    return tf.nn.max_pool2d(x, ksize=3, strides=2, padding="VALID")


def max_pool_3x3_stride2_pad1_by_slices(x: tf.Tensor) -> tf.Tensor:
    """The same pooling as the maximum of the 9 strided window offsets, for XLA.

    XLA refuses MaxPoolGrad under op determinism; Maximum's gradient is deterministic and, taken in
    row-major window order, sends a tie's gradient to the first maximum, as torch's backward does.
    """
    x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    out_h = (x.shape[1] - 3) // 2 + 1
    out_w = (x.shape[2] - 3) // 2 + 1
    pooled = None
    for dy in range(3):
        for dx in range(3):
            window = x[:, dy:dy + 2 * out_h - 1:2, dx:dx + 2 * out_w - 1:2, :]
            pooled = window if pooled is None else tf.maximum(pooled, window)
    return pooled


def global_average_pool(x: tf.Tensor) -> tf.Tensor:
    """AdaptiveAvgPool2d((1, 1)) followed by flatten: (N, H, W, C) -> (N, C).

    Summed in float32 and rounded once to x's dtype, as torch's kernel accumulates (and as Keras's
    ops.mean does): a bfloat16 sum of 49 values would lose bits at every add."""
    return tf.cast(tf.reduce_mean(tf.cast(x, tf.float32), axis=[1, 2]), x.dtype)
