"""torchvision's DenseNet-121 as a `tf.Module`: growth 32, bn_size 4, blocks 6/12/24/16."""

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

_GROWTH = 32
_BN_SIZE = 4
_BLOCKS = (6, 12, 24, 16)
_INITIAL_FEATURES = 64


class DenseLayer(tf.Module):
    """torchvision's _DenseLayer: BN, ReLU, 1x1 conv, BN, ReLU, 3x3 conv -> `growth` features."""

    def __init__(self, table: WeightTable, name: str, in_channels: int) -> None:
        super().__init__(name=None)
        width = _BN_SIZE * _GROWTH
        # torchvision's DenseNet inits convs with kaiming_normal_ in its default fan_in mode.
        self.norm1 = BatchNorm(table, f"{name}.norm1", in_channels)
        self.conv1 = Conv2D(table, f"{name}.conv1", in_channels, width, 1, fan="fan_in")
        self.norm2 = BatchNorm(table, f"{name}.norm2", width)
        self.conv2 = Conv2D(table, f"{name}.conv2", width, _GROWTH, 3, 1, 1, fan="fan_in")

    def __call__(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        out = self.conv1(tf.nn.relu(self.norm1(x, training)))
        return self.conv2(tf.nn.relu(self.norm2(out, training)))


class Transition(tf.Module):
    """torchvision's _Transition: BN, ReLU, 1x1 conv, AvgPool 2x2 stride 2."""

    def __init__(self, table: WeightTable, name: str, in_channels: int,
                 out_channels: int) -> None:
        super().__init__(name=None)
        self.norm = BatchNorm(table, f"{name}.norm", in_channels)
        self.conv = Conv2D(table, f"{name}.conv", in_channels, out_channels, 1, fan="fan_in")

    def __call__(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        x = self.conv(tf.nn.relu(self.norm(x, training)))
        return tf.nn.avg_pool2d(x, ksize=2, strides=2, padding="VALID")  # floor, as torch


class DenseNet121(tf.Module):
    """DenseNet-121 with a `num_labels`-logit head named `classifier`, NHWC float32 images in."""

    def __init__(self, table: WeightTable, num_labels: int,
                 max_pool: Callable[[tf.Tensor], tf.Tensor] = max_pool_3x3_stride2_pad1) -> None:
        super().__init__(name=None)
        self.max_pool = max_pool
        self.conv0 = Conv2D(table, "features.conv0", 3, _INITIAL_FEATURES, 7, 2, 3, fan="fan_in")
        self.norm0 = BatchNorm(table, "features.norm0", _INITIAL_FEATURES)
        self.blocks: list[list[DenseLayer]] = []
        self.transitions: list[Transition] = []
        channels = _INITIAL_FEATURES
        for block, count in enumerate(_BLOCKS, start=1):
            layers = []
            for index in range(1, count + 1):
                name = f"features.denseblock{block}.denselayer{index}"
                layers.append(DenseLayer(table, name, channels + (index - 1) * _GROWTH))
            self.blocks.append(layers)
            channels += count * _GROWTH
            if block < len(_BLOCKS):
                name = f"features.transition{block}"
                self.transitions.append(Transition(table, name, channels, channels // 2))
                channels //= 2
        self.norm5 = BatchNorm(table, "features.norm5", channels)
        # torchvision zeroes the classifier bias and keeps Linear's default weight init.
        self.classifier = Linear(table, "classifier", channels, num_labels, zero_bias=True)

    def features(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        """The final feature maps, relu(features(x)) in torchvision's terms, NHWC."""
        x = tf.nn.relu(self.norm0(self.conv0(x), training))
        x = self.max_pool(x)
        for index, layers in enumerate(self.blocks):
            for layer in layers:
                # Same order as torch.cat(features, 1): earlier features first.
                x = tf.concat([x, layer(x, training)], axis=-1)
            if index < len(self.transitions):
                x = self.transitions[index](x, training)
        return tf.nn.relu(self.norm5(x, training))

    def head(self, features: tf.Tensor) -> tf.Tensor:
        """Logits from the final feature maps: global average pool, then `classifier`."""
        return self.classifier(global_average_pool(features))

    def __call__(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        return self.head(self.features(x, training))
