"""torchvision's ResNet-50 (v1.5) in the Keras functional API, with torchvision's weight names."""

from __future__ import annotations

import keras

from .builder import NetworkBuilder, kaiming_normal, relu, torch_linear_uniform

# (blocks, bottleneck width, stride of the first block) of layer1..layer4; expansion 4.
_STAGES = ((3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2))
_EXPANSION = 4


def _bottleneck(b: NetworkBuilder, x, name: str, width: int, stride: int, in_channels: int):
    # v1.5: the stride sits on the 3x3 conv (ResNet v1 and keras.applications put it on conv1).
    out = relu(b.batch_norm(b.conv(x, f"{name}.conv1", width, 1), f"{name}.bn1"))
    out = b.conv(out, f"{name}.conv2", width, 3, stride=stride, padding=1)
    out = relu(b.batch_norm(out, f"{name}.bn2"))
    out = b.batch_norm(b.conv(out, f"{name}.conv3", width * _EXPANSION, 1), f"{name}.bn3")
    identity = x
    if stride != 1 or in_channels != width * _EXPANSION:
        identity = b.conv(x, f"{name}.downsample.0", width * _EXPANSION, 1, stride=stride)
        identity = b.batch_norm(identity, f"{name}.downsample.1")
    return relu(keras.layers.Add()([out, identity]))


def resnet50(images, num_labels: int) -> tuple[object, object, NetworkBuilder]:
    """Final feature maps (layer4's output, NHWC) and logits of ResNet-50 v1.5 on NHWC `images`;
    torchvision's init (kaiming fan_out convs)."""
    b = NetworkBuilder(kaiming_normal("fan_out"))
    x = relu(b.batch_norm(b.conv(images, "conv1", 64, 7, stride=2, padding=3), "bn1"))
    # Zero padding equals torch's -inf padding here: the input follows a ReLU, so it is >= 0.
    x = keras.layers.ZeroPadding2D(1)(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="valid")(x)
    channels = 64
    for stage, (blocks, width, stride) in enumerate(_STAGES, start=1):
        for block in range(blocks):
            x = _bottleneck(b, x, f"layer{stage}.{block}", width, stride if block == 0 else 1,
                            channels)
            channels = width * _EXPANSION
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    return x, b.dense(pooled, "fc", num_labels, torch_linear_uniform()), b
