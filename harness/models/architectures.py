"""The canonical networks, described without a framework: every tensor's neutral name, shape and role.

One architecture per name, as torchvision defines it (ResNet-50 v1.5, DenseNet-121) with a
`num_labels`-logit linear head. The neutral weights format is torchvision's `state_dict()` names and
layouts (conv OIHW, linear (out, in)) without BatchNorm's `num_batches_tracked` counter. The harness
uses this description to create the initial weights, to convert ImageNet checkpoints and to check
that every worker reports the same parameter counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

# Roles decide how a tensor is initialised and whether it counts as trainable.
CONV = "conv"              # conv weight, OIHW
BN_WEIGHT = "bn_weight"    # BatchNorm gamma, initialised to 1
BN_BIAS = "bn_bias"        # BatchNorm beta, initialised to 0
BN_MEAN = "bn_mean"        # running mean (non-trainable), 0
BN_VAR = "bn_var"          # running variance (non-trainable), 1
HEAD_WEIGHT = "head_weight"  # classifier weight, (out, in)
HEAD_BIAS = "head_bias"    # classifier bias
NON_TRAINABLE = (BN_MEAN, BN_VAR)


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the neutral format."""

    name: str
    shape: tuple[int, ...]
    role: str

    @property
    def size(self) -> int:
        """Number of elements."""
        total = 1
        for extent in self.shape:
            total *= extent
        return total


@dataclass(frozen=True)
class Architecture:
    """A canonical network: its tensors in torchvision's order, and how torchvision initialises it."""

    name: str
    tensors: tuple[TensorSpec, ...]
    head: str  # prefix of the classifier's tensors ("fc" or "classifier")
    # torchvision's conv init: kaiming_normal_ with fan "fan_out" (ResNet) or "fan_in" (DenseNet).
    conv_fan: str
    # torchvision zeroes the head bias for DenseNet; ResNet keeps nn.Linear's uniform default.
    zero_head_bias: bool

    def counts(self) -> tuple[int, int]:
        """(trainable, non_trainable) element counts; non-trainable = BatchNorm running statistics."""
        trainable = sum(t.size for t in self.tensors if t.role not in NON_TRAINABLE)
        frozen = sum(t.size for t in self.tensors if t.role in NON_TRAINABLE)
        return trainable, frozen

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Neutral name -> shape."""
        return {t.name: t.shape for t in self.tensors}


def _conv(name: str, out: int, inp: int, k: int) -> Iterator[TensorSpec]:
    yield TensorSpec(f"{name}.weight", (out, inp, k, k), CONV)


def _bn(name: str, channels: int) -> Iterator[TensorSpec]:
    for suffix, role in (("weight", BN_WEIGHT), ("bias", BN_BIAS),
                         ("running_mean", BN_MEAN), ("running_var", BN_VAR)):
        yield TensorSpec(f"{name}.{suffix}", (channels,), role)


def _head(name: str, features: int, num_labels: int) -> Iterator[TensorSpec]:
    yield TensorSpec(f"{name}.weight", (num_labels, features), HEAD_WEIGHT)
    yield TensorSpec(f"{name}.bias", (num_labels,), HEAD_BIAS)


def _resnet50(num_labels: int) -> Iterator[TensorSpec]:
    yield from _conv("conv1", 64, 3, 7)
    yield from _bn("bn1", 64)
    inplanes = 64
    for stage, (blocks, planes) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True), start=1):
        for block in range(blocks):
            prefix = f"layer{stage}.{block}"
            yield from _conv(f"{prefix}.conv1", planes, inplanes, 1)
            yield from _bn(f"{prefix}.bn1", planes)
            yield from _conv(f"{prefix}.conv2", planes, planes, 3)  # v1.5: the stride is here
            yield from _bn(f"{prefix}.bn2", planes)
            yield from _conv(f"{prefix}.conv3", planes * 4, planes, 1)
            yield from _bn(f"{prefix}.bn3", planes * 4)
            if block == 0:
                yield from _conv(f"{prefix}.downsample.0", planes * 4, inplanes, 1)
                yield from _bn(f"{prefix}.downsample.1", planes * 4)
            inplanes = planes * 4
    yield from _head("fc", inplanes, num_labels)


def _densenet121(num_labels: int) -> Iterator[TensorSpec]:
    growth, bottleneck = 32, 4 * 32
    yield from _conv("features.conv0", 64, 3, 7)
    yield from _bn("features.norm0", 64)
    features = 64
    for index, layers in enumerate((6, 12, 24, 16), start=1):
        for layer in range(1, layers + 1):
            prefix = f"features.denseblock{index}.denselayer{layer}"
            channels = features + (layer - 1) * growth
            yield from _bn(f"{prefix}.norm1", channels)
            yield from _conv(f"{prefix}.conv1", bottleneck, channels, 1)
            yield from _bn(f"{prefix}.norm2", bottleneck)
            yield from _conv(f"{prefix}.conv2", growth, bottleneck, 3)
        features += layers * growth
        if index != 4:
            yield from _bn(f"features.transition{index}.norm", features)
            yield from _conv(f"features.transition{index}.conv", features // 2, features, 1)
            features //= 2
    yield from _bn("features.norm5", features)
    yield from _head("classifier", features, num_labels)


_BUILDERS: dict[str, tuple[Callable[[int], Iterator[TensorSpec]], str, str, bool]] = {
    "resnet50": (_resnet50, "fc", "fan_out", False),
    "densenet121": (_densenet121, "classifier", "fan_in", True),
}
ARCHITECTURE_NAMES = tuple(_BUILDERS)


def architecture(name: str, num_labels: int = 14) -> Architecture:
    """The canonical description of `name`; ValueError naming the known ones otherwise."""
    if name not in _BUILDERS:
        raise ValueError(f"--arch: unknown architecture {name!r} (known: {', '.join(_BUILDERS)})")
    if num_labels < 1:
        raise ValueError(f"num_labels must be at least 1, got {num_labels}")
    build, head, conv_fan, zero_head_bias = _BUILDERS[name]
    return Architecture(name, tuple(build(num_labels)), head, conv_fan, zero_head_bias)


def _convolved(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output extent of a convolution or pooling window (torch's formula, floor mode)."""
    return (size + 2 * padding - kernel) // stride + 1


# Every layer that changes the spatial extent on the way to the final feature maps, as
# (kernel, stride, padding). ResNet-50: conv1, the max pool, then the strided 3x3 conv of layer2..4
# (its 1x1 stride-2 shortcut gives the same extent). DenseNet-121: conv0, the max pool, then the
# 2x2 stride-2 average pool of transition1..3 (floor: an odd extent loses its last row).
_DOWNSAMPLING: dict[str, tuple[tuple[int, int, int], ...]] = {
    "resnet50": ((7, 2, 3), (3, 2, 1), (3, 2, 1), (3, 2, 1), (3, 2, 1)),
    "densenet121": ((7, 2, 3), (3, 2, 1), (2, 2, 0), (2, 2, 0), (2, 2, 0)),
}


def feature_map_size(name: str, image_size: int) -> int:
    """Height (= width) of `name`'s final feature maps for square images of `image_size` pixels.

    Both networks divide by 32 overall, rounding as each layer does: 224 -> 7, 128 -> 4, 64 -> 2, but
    100 -> 4 for ResNet-50 (its padded 3x3 convs round up) and 3 for DenseNet-121 (its average pools
    round down). ValueError for an unknown name or an image too small to leave one cell.
    """
    architecture(name)  # the known names, said in the error
    size = image_size
    for kernel, stride, padding in _DOWNSAMPLING[name]:
        size = _convolved(size, kernel, stride, padding)
        if size < 1:
            raise ValueError(f"image_size: {image_size} px is too small for {name} (no feature map is left)")
    return size


def feature_channels(name: str) -> int:
    """Channels of `name`'s final feature maps: the head weight's second dimension (2048, 1024)."""
    arch = architecture(name)
    return arch.shapes()[f"{arch.head}.weight"][1]
