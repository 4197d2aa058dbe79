"""torchvision's ResNet-50 (v1.5) as a `tf.Module`: stride on the 3x3 conv, no conv biases."""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from .layers import (
    BatchNorm,
    Conv2D,
    Linear,
    WeightTable,
    global_average_pool,
    max_pool_3x3_stride2_pad1,
)

_EXPANSION = 4
_BLOCKS = (3, 4, 6, 3)
_PLANES = (64, 128, 256, 512)


class Bottleneck(tf.Module):
    """torchvision.models.resnet.Bottleneck: 1x1, 3x3 (strided), 1x1, plus the shortcut."""

    def __init__(self, table: WeightTable, name: str, in_channels: int, planes: int,
                 stride: int) -> None:
        super().__init__(name=None)
        out_channels = planes * _EXPANSION
        self.conv1 = Conv2D(table, f"{name}.conv1", in_channels, planes, 1)
        self.bn1 = BatchNorm(table, f"{name}.bn1", planes)
        self.conv2 = Conv2D(table, f"{name}.conv2", planes, planes, 3, stride, 1)
        self.bn2 = BatchNorm(table, f"{name}.bn2", planes)
        self.conv3 = Conv2D(table, f"{name}.conv3", planes, out_channels, 1)
        self.bn3 = BatchNorm(table, f"{name}.bn3", out_channels)
        self.downsample: tuple[Conv2D, BatchNorm] | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = (
                Conv2D(table, f"{name}.downsample.0", in_channels, out_channels, 1, stride),
                BatchNorm(table, f"{name}.downsample.1", out_channels),
            )

    def __call__(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        out = tf.nn.relu(self.bn1(self.conv1(x), training))
        out = tf.nn.relu(self.bn2(self.conv2(out), training))
        out = self.bn3(self.conv3(out), training)
        shortcut = x
        if self.downsample is not None:
            conv, norm = self.downsample
            shortcut = norm(conv(x), training)
        return tf.nn.relu(out + shortcut)


class ResNet50(tf.Module):
    """ResNet-50 with a `num_labels`-logit head named `fc`, NHWC float32 images in."""

    def __init__(self, table: WeightTable, num_labels: int,
                 max_pool: Callable[[tf.Tensor], tf.Tensor] = max_pool_3x3_stride2_pad1) -> None:
        super().__init__(name=None)
        self.max_pool = max_pool
        self.conv1 = Conv2D(table, "conv1", 3, 64, 7, 2, 3)
        self.bn1 = BatchNorm(table, "bn1", 64)
        self.blocks: list[Bottleneck] = []
        in_channels = 64
        for stage, (count, planes) in enumerate(zip(_BLOCKS, _PLANES, strict=True), start=1):
            for index in range(count):
                stride = 2 if stage > 1 and index == 0 else 1
                self.blocks.append(Bottleneck(table, f"layer{stage}.{index}", in_channels,
                                              planes, stride))
                in_channels = planes * _EXPANSION
        self.fc = Linear(table, "fc", in_channels, num_labels)

    def features(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        """The final feature maps (layer4's output), NHWC."""
        x = tf.nn.relu(self.bn1(self.conv1(x), training))
        x = self.max_pool(x)
        for block in self.blocks:
            x = block(x, training)
        return x

    def head(self, features: tf.Tensor) -> tf.Tensor:
        """Logits from the final feature maps: global average pool, then `fc`."""
        return self.fc(global_average_pool(features))

    def __call__(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        return self.head(self.features(x, training))
