"""Keras layers that compute exactly what their PyTorch counterparts compute.

Written with keras.ops only, so they run on any Keras backend.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops


class TorchBatchNorm(keras.layers.Layer):
    """BatchNorm over the last (channel) axis with the semantics of torch.nn.BatchNorm2d.

    Training normalises with the batch mean and the biased batch variance, then updates
    `moving = (1 - momentum) * moving + momentum * batch` with the UNBIASED variance (n / (n - 1),
    n = N*H*W), as PyTorch does. keras.layers.BatchNormalization feeds the biased variance into its
    moving average (and defaults to eps 1e-3, momentum 0.99), so its running_var drifts from
    PyTorch's after the first step: that is the parity bug this layer exists to avoid.
    Inference normalises with the moving statistics.
    """

    def __init__(self, epsilon: float = 1e-5, momentum: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.epsilon = epsilon
        self.momentum = momentum

    def build(self, input_shape: Sequence[int | None]) -> None:
        channels = (int(input_shape[-1]),)
        # autocast=False: under a mixed policy Keras would hand call() these as bfloat16 / float16;
        # the statistics and the normalisation stay float32, as torch's batch_norm under autocast.
        self.gamma = self.add_weight(shape=channels, initializer="ones", name="gamma", autocast=False)
        self.beta = self.add_weight(shape=channels, initializer="zeros", name="beta", autocast=False)
        self.moving_mean = self.add_weight(shape=channels, initializer="zeros",
                                           trainable=False, name="moving_mean", autocast=False)
        self.moving_variance = self.add_weight(shape=channels, initializer="ones",
                                               trainable=False, name="moving_variance", autocast=False)

    def call(self, inputs, training: bool | None = None):
        # Statistics in the variables' dtype: float32 even under mixed_float16, as torch's autocast
        # runs batch_norm in float32.
        x = ops.cast(inputs, self.variable_dtype)
        if training:
            mean, variance = ops.moments(x, axes=[0, 1, 2])  # biased variance
            count = ops.cast(ops.size(x) // ops.shape(x)[-1], x.dtype)
            unbiased = variance * count / ops.maximum(count - 1.0, 1.0)
            keep = 1.0 - self.momentum
            self.moving_mean.assign(self.moving_mean * keep + mean * self.momentum)
            self.moving_variance.assign(self.moving_variance * keep + unbiased * self.momentum)
        else:
            mean, variance = self.moving_mean, self.moving_variance
        # Centre first, as torch does: the fused x * scale + (beta - mean * scale) is one op cheaper,
        # but its gradient for the scale is sum(g * x) - mean * sum(g), which cancels badly when
        # |mean| >> std (it made ResNet-50's layer4 fp32 gradients ~25% off float64).
        outputs = (x - mean) * (self.gamma * ops.rsqrt(variance + self.epsilon)) + self.beta
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> Sequence[int | None]:
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "epsilon": self.epsilon, "momentum": self.momentum}


class GrayscaleToImage(keras.layers.Layer):
    """uint8 pixels (N, H, W) -> float32 (N, H, W, 3): /255, three equal channels, (x - mean) / std.

    The same arithmetic, in the same order, as the PyTorch worker, so the first conv sees the same
    float32 values. Always float32, also under a mixed policy (the first conv casts its input).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], **kwargs) -> None:
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def call(self, pixels):
        x = ops.cast(pixels, "float32") / 255.0
        x = ops.expand_dims(x, -1)
        x = ops.concatenate([x, x, x], axis=-1)
        mean = ops.convert_to_tensor(self.mean, dtype="float32")
        std = ops.convert_to_tensor(self.std, dtype="float32")
        return (x - mean) / std

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return (*input_shape, 3)

    def get_config(self) -> dict:
        return {**super().get_config(), "mean": self.mean, "std": self.std}
