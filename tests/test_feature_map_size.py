"""The final feature maps' extent and channels, by arithmetic alone (harness.models.architectures).

The expected sizes were read off torchvision 0.29.1 (layer4's output of resnet50, features(x) of
densenet121, on zero images of each size); the conformance suite checks every worker against them.
"""

from __future__ import annotations

import pytest

from harness.models.architectures import ARCHITECTURE_NAMES, feature_channels, feature_map_size

# image size -> (ResNet-50, DenseNet-121); they part where rounding does (33, 97, 100 px).
TORCHVISION_SIZES = {32: (1, 1), 33: (2, 1), 63: (2, 2), 64: (2, 2), 97: (4, 3), 100: (4, 3), 128: (4, 4),
                     224: (7, 7)}


@pytest.mark.parametrize("image_size", sorted(TORCHVISION_SIZES))
def test_feature_map_size_follows_torchvisions_strides_and_rounding(image_size):
    resnet, densenet = TORCHVISION_SIZES[image_size]
    assert feature_map_size("resnet50", image_size) == resnet
    assert feature_map_size("densenet121", image_size) == densenet


def test_both_networks_divide_by_32_on_multiples_of_32():
    for name in ARCHITECTURE_NAMES:
        assert [feature_map_size(name, 32 * k) for k in (1, 2, 4, 7, 16, 32)] == [1, 2, 4, 7, 16, 32]


def test_feature_channels_are_the_head_inputs():
    assert (feature_channels("resnet50"), feature_channels("densenet121")) == (2048, 1024)


def test_an_image_too_small_or_an_unknown_network_is_refused_by_name():
    assert feature_map_size("resnet50", 16) == 1  # every padded 3x3 conv rounds up
    with pytest.raises(ValueError, match="image_size: 16 px is too small for densenet121"):
        feature_map_size("densenet121", 16)  # the third average pool rounds 1 down to 0
    with pytest.raises(ValueError, match="unknown architecture 'vgg16'"):
        feature_map_size("vgg16", 224)
