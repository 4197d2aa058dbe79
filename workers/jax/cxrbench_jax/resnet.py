"""torchvision's ResNet-50 (v1.5) in Flax: the stride on the 3x3 convolution, no convolution biases."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from .layers import Dtype, TorchBatchNorm, conv, global_average_pool, linear, max_pool_3x3_stride2_pad1

EXPANSION = 4
BLOCKS = (3, 4, 6, 3)
PLANES = (64, 128, 256, 512)


class Downsample(nn.Module):
    """torchvision's shortcut `downsample`: a strided 1x1 convolution ("0") and BatchNorm ("1")."""

    features: int
    stride: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        x = conv(self.features, 1, self.stride, name="0", dtype=self.dtype)(x)
        return TorchBatchNorm(name="1")(x, train)


class Bottleneck(nn.Module):
    """torchvision.models.resnet.Bottleneck: 1x1, 3x3 (strided), 1x1, plus the shortcut."""

    planes: int
    stride: int
    downsample: bool
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        out = nn.relu(TorchBatchNorm(name="bn1")(conv(self.planes, 1, name="conv1", dtype=self.dtype)(x), train))
        out = conv(self.planes, 3, self.stride, 1, name="conv2", dtype=self.dtype)(out)
        out = nn.relu(TorchBatchNorm(name="bn2")(out, train))
        out = TorchBatchNorm(name="bn3")(conv(self.planes * EXPANSION, 1, name="conv3", dtype=self.dtype)(out), train)
        shortcut = x
        if self.downsample:
            shortcut = Downsample(self.planes * EXPANSION, self.stride, self.dtype, name="downsample")(x, train)
        return nn.relu(out + shortcut)


class Stage(nn.Module):
    """One of torchvision's `layer1`..`layer4`: bottlenecks named "0", "1", ..."""

    planes: int
    blocks: int
    stride: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        for index in range(self.blocks):
            first = index == 0
            downsample = first and (self.stride != 1 or x.shape[-1] != self.planes * EXPANSION)
            x = Bottleneck(self.planes, self.stride if first else 1, downsample, self.dtype, name=str(index))(x, train)
        return x


class ResNet50(nn.Module):
    """ResNet-50 with a `num_labels`-logit head named `fc`; NHWC float32 images in."""

    num_labels: int
    dtype: Dtype = jnp.float32

    def features(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """The final feature maps (layer4's output), NHWC."""
        x = nn.relu(self.bn1(self.conv1(x), train))
        x = max_pool_3x3_stride2_pad1(x)
        for stage in self.stages:
            x = stage(x, train)
        return x

    def setup(self) -> None:
        self.conv1 = conv(64, 7, 2, 3, name="conv1", dtype=self.dtype)
        self.bn1 = TorchBatchNorm()
        self.stages = [Stage(planes, count, 1 if number == 1 else 2, self.dtype, name=f"layer{number}")
                       for number, (count, planes) in enumerate(zip(BLOCKS, PLANES, strict=True), start=1)]
        self.fc = linear(self.num_labels, PLANES[-1] * EXPANSION, name="fc", dtype=self.dtype)

    def head(self, features: jnp.ndarray) -> jnp.ndarray:
        """Float32 logits from the final feature maps: global average pool, then `fc`."""
        return self.fc(global_average_pool(features)).astype(jnp.float32)

    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        return self.head(self.features(x, train))

    def features_and_logits(self, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Eval-mode final feature maps and the logits of the same pass."""
        features = self.features(x, False)
        return features, self.head(features)
