"""Flax (linen) layers with PyTorch's semantics, NHWC, named as torchvision names its tensors.

Every submodule is named after its torchvision counterpart ("layer1" > "0" > "conv1"), so a
parameter's path, joined with dots, is its torchvision `state_dict()` name once the leaf is renamed
(`model.neutral_name`): the neutral weight format is a rename plus a transpose.

Parameters are float32 (the master weights); convolutions and the head compute in `dtype` (float32,
or bfloat16 / float16 under mixed precision), casting their parameters to it as torch's autocast
does; BatchNorm computes in float32 and returns `dtype` (cxrbench_worker.mixed_precision).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

BN_EPSILON = 1e-5  # torch.nn.BatchNorm2d's default (Flax's nn.BatchNorm also defaults to 1e-5)
BN_MOMENTUM = 0.1  # torch: running = (1 - 0.1) * running + 0.1 * batch (Flax's momentum=0.9 means the same)

Dtype = Any


def kaiming_normal(mode: str) -> nn.initializers.Initializer:
    """torch.nn.init.kaiming_normal_(nonlinearity="relu") in `mode` ("fan_in" or "fan_out")."""
    return nn.initializers.variance_scaling(2.0, mode, "normal")


class Conv(nn.Module):
    """torch.nn.Conv2d(bias=False) with symmetric zero padding; the kernel is stored HWIO.

    Never "SAME": for a stride-2 convolution XLA's SAME pads one pixel less on the top and left than
    on the bottom and right, where torch pads `padding` on every side; every output would shift.

    On a CPU, a convolution whose output is smaller than its kernel (the 3x3 convolutions of
    ResNet-50's layer4 on 2 x 2 maps, at 48 to 64 px) takes a path of XLA's about 80 times slower
    than the rest (0.8 s for one batch of 32); there it is computed as one matmul over the k*k shifted
    views of the padded input (im2col): the same products, summed in another order.
    """

    features: int
    kernel: int
    stride: int = 1
    padding: int = 0
    dtype: Dtype = jnp.float32
    mode: str = "fan_out"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        k, s, p = self.kernel, self.stride, self.padding
        weight = self.param("kernel", kaiming_normal(self.mode), (k, k, x.shape[-1], self.features), jnp.float32)
        x, weight = x.astype(self.dtype), weight.astype(self.dtype)
        rows, columns = ((size + 2 * p - k) // s + 1 for size in x.shape[1:3])
        if k > 1 and min(rows, columns) < k and jax.default_backend() == "cpu":
            padded = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
            views = [padded[:, dy:dy + s * (rows - 1) + 1:s, dx:dx + s * (columns - 1) + 1:s, :]
                     for dy in range(k) for dx in range(k)]
            return jnp.concatenate(views, axis=-1) @ weight.reshape(-1, self.features)
        return jax.lax.conv_general_dilated(x, weight, (s, s), ((p, p), (p, p)),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv(features: int, kernel: int, stride: int = 1, padding: int = 0, *, name: str,
         dtype: Dtype = jnp.float32, mode: str = "fan_out") -> Conv:
    """torch.nn.Conv2d(in, `features`, `kernel`, `stride`, `padding`, bias=False), initialised with
    kaiming_normal_ in `mode`."""
    return Conv(features, kernel, stride, padding, dtype, mode, name=name)


def linear(features: int, fan_in: int, *, name: str, dtype: Dtype = jnp.float32, zero_bias: bool = False) -> nn.Dense:
    """torch.nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the weight (and the bias unless
    `zero_bias`, as DenseNet's classifier); the kernel is stored (in, out), torch's transposed."""
    bound = 1.0 / fan_in**0.5
    uniform = nn.initializers.uniform(2 * bound)

    def symmetric(key, shape, dtype=jnp.float32):
        return uniform(key, shape, dtype) - bound

    return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, kernel_init=symmetric,
                    bias_init=nn.initializers.zeros if zero_bias else symmetric, name=name)


class TorchBatchNorm(nn.Module):
    """torch.nn.BatchNorm2d over the channel (last) axis: eps 1e-5, momentum 0.1.

    Training normalises with the batch mean and the biased variance, and moves the running variance
    towards the UNBIASED one (n / (n - 1), n = N*H*W), as torch does. Flax's nn.BatchNorm moves it
    towards the biased variance, and computes that variance as E[x^2] - E[x]^2, which cancels badly
    when |mean| >> std: both would drift from PyTorch, so this layer is written out. The statistics
    and the normalisation are float32 whatever the input's dtype; the output has the input's dtype.
    """

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        channels = x.shape[-1]
        weight = self.param("weight", nn.initializers.ones, (channels,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
        running_mean = self.variable("batch_stats", "running_mean", jnp.zeros, (channels,), jnp.float32)
        running_var = self.variable("batch_stats", "running_var", jnp.ones, (channels,), jnp.float32)
        x32 = x.astype(jnp.float32)
        if train:
            mean = x32.mean(axis=(0, 1, 2))
            variance = jnp.square(x32 - mean).mean(axis=(0, 1, 2))  # two passes, biased
            count = x.size // channels
            unbiased = variance * (count / max(count - 1, 1))
            if not self.is_initializing():
                running_mean.value = (1 - BN_MOMENTUM) * running_mean.value + BN_MOMENTUM * mean
                running_var.value = (1 - BN_MOMENTUM) * running_var.value + BN_MOMENTUM * unbiased
        else:
            mean, variance = running_mean.value, running_var.value
        # Centre first, as torch does (x * scale + (bias - mean * scale) has a badly cancelling
        # gradient for the scale when |mean| >> std).
        return ((x32 - mean) * (weight * (1.0 / jnp.sqrt(variance + BN_EPSILON))) + bias).astype(x.dtype)


def max_pool_3x3_stride2_pad1(x: jnp.ndarray) -> jnp.ndarray:
    """torch.nn.MaxPool2d(3, 2, padding=1), as the maximum of the 9 strided views of the input padded
    with -inf (as torch pads).

    Flax's nn.max_pool computes the same maxima, but its gradient (XLA's select-and-scatter) took
    75 ms per batch of 32 on a CPU against 9 ms for the views' (about a tenth of a ResNet-50 step at
    48 px). A tie's gradient differs (shared here, the first maximum's in torch), but the input is a
    ReLU's output: ties are zeros, whose gradient the ReLU stops either way."""
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    rows, columns = ((size - 3) // 2 + 1 for size in x.shape[1:3])
    views = (x[:, dy:dy + 2 * rows - 1:2, dx:dx + 2 * columns - 1:2, :] for dy in range(3) for dx in range(3))
    return functools.reduce(jnp.maximum, views)


def global_average_pool(x: jnp.ndarray) -> jnp.ndarray:
    """AdaptiveAvgPool2d((1, 1)) and flatten, (N, H, W, C) -> (N, C): summed in float32 and rounded
    once to x's dtype, as torch's kernel accumulates."""
    return x.astype(jnp.float32).mean(axis=(1, 2)).astype(x.dtype)
