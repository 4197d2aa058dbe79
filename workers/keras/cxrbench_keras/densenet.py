"""torchvision's DenseNet-121 in the Keras functional API, with torchvision's weight names."""

from __future__ import annotations

import keras

from .builder import NetworkBuilder, kaiming_normal, relu

_GROWTH = 32
_BN_SIZE = 4
_BLOCKS = (6, 12, 24, 16)
_INIT_FEATURES = 64


def _dense_layer(b: NetworkBuilder, x, name: str):
    out = relu(b.batch_norm(x, f"{name}.norm1"))
    out = relu(b.batch_norm(b.conv(out, f"{name}.conv1", _BN_SIZE * _GROWTH, 1), f"{name}.norm2"))
    out = b.conv(out, f"{name}.conv2", _GROWTH, 3, padding=1)
    # torchvision concatenates [input, new features] in this order: channel order is part of parity.
    return keras.layers.Concatenate(axis=-1)([x, out])


def _transition(b: NetworkBuilder, x, name: str, channels: int):
    x = b.conv(relu(b.batch_norm(x, f"{name}.norm")), f"{name}.conv", channels, 1)
    return keras.layers.AveragePooling2D(2, strides=2, padding="valid")(x)


def densenet121(images, num_labels: int) -> tuple[object, object, NetworkBuilder]:
    """Final feature maps (relu(features(x)), NHWC) and logits of DenseNet-121 on NHWC `images`;
    torchvision's init (kaiming fan_in convs, zero bias)."""
    b = NetworkBuilder(kaiming_normal("fan_in"))
    x = b.conv(images, "features.conv0", _INIT_FEATURES, 7, stride=2, padding=3)
    x = relu(b.batch_norm(x, "features.norm0"))
    # Zero padding equals torch's -inf padding here: the input follows a ReLU, so it is >= 0.
    x = keras.layers.ZeroPadding2D(1)(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="valid")(x)
    channels = _INIT_FEATURES
    for block, layers in enumerate(_BLOCKS, start=1):
        for layer in range(1, layers + 1):
            x = _dense_layer(b, x, f"features.denseblock{block}.denselayer{layer}")
        channels += layers * _GROWTH
        if block != len(_BLOCKS):
            channels //= 2
            x = _transition(b, x, f"features.transition{block}", channels)
    x = relu(b.batch_norm(x, "features.norm5"))
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    return x, b.dense(pooled, "classifier", num_labels, keras.initializers.Zeros()), b
