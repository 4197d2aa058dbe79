"""The CAM rules every worker's maps go through: torch's bilinear upsampling, min-max scaling, and
thresholded 8-connected regions, checked against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from harness.evaluation.cams import class_activation_maps, normalise, regions, upsample


def test_cam_is_the_head_weighted_sum_of_feature_maps() -> None:
    features = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    weight = np.array([[1.0, 0.0, -1.0]], dtype=np.float32)
    maps = class_activation_maps(features, weight)
    np.testing.assert_array_equal(maps[:, 0], features[:, 0] - features[:, 2])


def test_upsample_2x2_to_4x4_matches_hand_computed_half_pixel_bilinear() -> None:
    # Along an axis [a, b] -> [a, 0.75a + 0.25b, 0.25a + 0.75b, b] (source positions -0.25 clamped to 0,
    # 0.25, 0.75, 1.25 clamped to the last pixel); the map 2 * row + column is linear, so each axis adds up.
    expected = np.array([[0.0, 0.25, 0.75, 1.0],
                         [0.5, 0.75, 1.25, 1.5],
                         [1.5, 1.75, 2.25, 2.5],
                         [2.0, 2.25, 2.75, 3.0]])
    np.testing.assert_allclose(upsample(np.array([[0.0, 1.0], [2.0, 3.0]]), 4), expected, rtol=0, atol=1e-12)


def test_upsample_3_to_5_uses_fractional_source_positions() -> None:
    # Scale 3/5: positions -0.2 (clamped: a), 0.4 (0.6a + 0.4b), 1.0 (b), 1.6 (0.4b + 0.6c), 2.2 (clamped: c).
    result = upsample(np.array([[0.0, 10.0, 20.0]]), 5)
    np.testing.assert_allclose(result, np.tile([0.0, 4.0, 10.0, 16.0, 20.0], (5, 1)), rtol=0, atol=1e-12)


def test_upsample_to_the_same_size_is_the_identity_and_keeps_leading_axes() -> None:
    maps = np.random.default_rng(0).normal(size=(2, 3, 7, 7))
    result = upsample(maps, 7)
    assert result.shape == (2, 3, 7, 7)
    np.testing.assert_allclose(result, maps, rtol=0, atol=1e-12)


def test_normalise_scales_each_map_to_0_1_and_a_constant_map_to_zeros() -> None:
    maps = np.array([[[1.0, 3.0], [5.0, 9.0]], [[4.0, 4.0], [4.0, 4.0]]])
    np.testing.assert_allclose(normalise(maps), [[[0.0, 0.25], [0.5, 1.0]], [[0.0, 0.0], [0.0, 0.0]]])


def test_normalise_refuses_nan() -> None:
    with pytest.raises(ValueError, match="NaN or infinite"):
        normalise(np.array([[np.nan, 1.0]]))


def _two_blobs() -> np.ndarray:
    map01 = np.zeros((10, 10))
    map01[1:3, 1:4] = 0.6   # 6 pixels, top left
    map01[6:9, 5:9] = 0.8   # 12 pixels, bottom right
    map01[7, 6] = 1.0
    return map01


def test_regions_all_keeps_every_component_with_bounding_boxes_in_row_major_order() -> None:
    mask, boxes = regions(_two_blobs(), 0.5, "all")
    assert boxes.tolist() == [[1, 1, 3, 2], [5, 6, 4, 3]]
    assert mask.sum() == 18


def test_regions_largest_keeps_the_component_with_most_pixels() -> None:
    mask, boxes = regions(_two_blobs(), 0.5, "largest")
    assert boxes.tolist() == [[5, 6, 4, 3]]
    assert mask.sum() == 12 and mask[7, 6] and not mask[1, 1]


def test_regions_largest_tie_goes_to_the_component_holding_the_maximum_then_the_first() -> None:
    map01 = np.zeros((6, 6))
    map01[0, 0:2] = 0.7   # A: 2 pixels
    map01[4, 3:5] = 0.7   # C: 2 pixels
    map01[2, 5] = 1.0     # B: 1 pixel, the maximum
    assert regions(map01, 0.5, "largest")[1].tolist() == [[0, 0, 2, 1]]  # A and C tie, neither has it: the first
    map01[2, 5] = 0.7
    map01[4, 4] = 1.0
    assert regions(map01, 0.5, "largest")[1].tolist() == [[3, 4, 2, 1]]  # now C holds the maximum
    assert regions(map01, 1.5, "largest")[1].shape == (0, 4)  # nothing reaches the threshold: no box


def test_regions_are_8_connected_and_include_the_threshold_value() -> None:
    map01 = np.zeros((4, 4))
    map01[0, 0] = map01[1, 1] = map01[2, 2] = 0.5  # diagonal neighbours only
    mask, boxes = regions(map01, 0.5, "all")
    assert boxes.tolist() == [[0, 0, 3, 3]]
    assert mask.sum() == 3
    assert regions(map01, 0.5000001, "all")[1].shape == (0, 4)


def test_regions_refuses_an_unknown_component_rule() -> None:
    with pytest.raises(ValueError, match="largest"):
        regions(np.zeros((2, 2)), 0.5, "biggest")
