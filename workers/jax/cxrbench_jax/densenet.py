"""torchvision's DenseNet-121 in Flax: growth 32, bn_size 4, blocks 6/12/24/16, 64 initial features."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from .layers import Dtype, TorchBatchNorm, conv, global_average_pool, linear, max_pool_3x3_stride2_pad1

GROWTH = 32
BN_SIZE = 4
BLOCKS = (6, 12, 24, 16)
INITIAL_FEATURES = 64


def feature_channels() -> int:
    """The channels of the final feature maps (1024): each block adds its layers' features, each
    transition halves them."""
    channels = INITIAL_FEATURES
    for number, layers in enumerate(BLOCKS, start=1):
        channels += layers * GROWTH
        if number < len(BLOCKS):
            channels //= 2
    return channels


class DenseLayer(nn.Module):
    """torchvision's _DenseLayer: BN, ReLU, 1x1 conv, BN, ReLU, 3x3 conv -> GROWTH new features.

    torchvision initialises DenseNet's convolutions with kaiming_normal_ in its default fan_in mode."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        out = conv(BN_SIZE * GROWTH, 1, name="conv1", dtype=self.dtype, mode="fan_in")(
            nn.relu(TorchBatchNorm(name="norm1")(x, train)))
        return conv(GROWTH, 3, 1, 1, name="conv2", dtype=self.dtype, mode="fan_in")(
            nn.relu(TorchBatchNorm(name="norm2")(out, train)))


class DenseBlock(nn.Module):
    """`denseblockN`: layers "denselayer1".. each seeing every earlier layer's features."""

    layers: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        for index in range(1, self.layers + 1):
            # Earlier features first, as torch.cat(features, 1).
            x = jnp.concatenate([x, DenseLayer(self.dtype, name=f"denselayer{index}")(x, train)], axis=-1)
        return x


class Transition(nn.Module):
    """torchvision's _Transition: BN, ReLU, 1x1 conv to `features` channels, 2x2 average pool (floor)."""

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        x = conv(self.features, 1, name="conv", dtype=self.dtype, mode="fan_in")(
            nn.relu(TorchBatchNorm(name="norm")(x, train)))
        return nn.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")


class Features(nn.Module):
    """torchvision's `features` Sequential: conv0, norm0, pool, dense blocks and transitions, norm5."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        x = conv(INITIAL_FEATURES, 7, 2, 3, name="conv0", dtype=self.dtype, mode="fan_in")(x)
        x = max_pool_3x3_stride2_pad1(nn.relu(TorchBatchNorm(name="norm0")(x, train)))
        channels = INITIAL_FEATURES
        for number, layers in enumerate(BLOCKS, start=1):
            x = DenseBlock(layers, self.dtype, name=f"denseblock{number}")(x, train)
            channels += layers * GROWTH
            if number < len(BLOCKS):
                channels //= 2
                x = Transition(channels, self.dtype, name=f"transition{number}")(x, train)
        return TorchBatchNorm(name="norm5")(x, train)


class DenseNet121(nn.Module):
    """DenseNet-121 with a `num_labels`-logit head named `classifier`; NHWC float32 images in."""

    num_labels: int
    dtype: Dtype = jnp.float32

    def setup(self) -> None:
        self.features_module = Features(self.dtype, name="features")
        # torchvision zeroes the classifier's bias and keeps Linear's default weight init.
        self.classifier = linear(self.num_labels, feature_channels(), name="classifier", dtype=self.dtype,
                                 zero_bias=True)

    def features(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """The final feature maps, relu(features(x)) in torchvision's terms, NHWC."""
        return nn.relu(self.features_module(x, train))

    def head(self, features: jnp.ndarray) -> jnp.ndarray:
        """Float32 logits from the final feature maps: global average pool, then `classifier`."""
        return self.classifier(global_average_pool(features)).astype(jnp.float32)

    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        return self.head(self.features(x, train))

    def features_and_logits(self, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Eval-mode final feature maps and the logits of the same pass."""
        features = self.features(x, False)
        return features, self.head(features)
