"""Localisation scores on hand-computed cases: IoU against IoBB, the pointing game on a box's edge,
Wang's accuracy and false positives, mask IoU, the exact chance baselines, and tuned thresholds.

Maps are given at the image's resolution (h = w = S), where upsampling is the identity, so every
pixel of a map is a pixel of the image and the expected numbers can be counted by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.evaluation.localization import (
    DEFAULT_GRID,
    box_mask,
    centred_box,
    iobb,
    iou,
    localization_cases,
    score_cases,
    tune_thresholds,
)

LABELS = 14


def _cases(maps: dict[tuple[int, int], np.ndarray], boxes: list[tuple[int, ...]], size: int, images: int = 1):
    """Cases from maps placed at (image, label) (zeros elsewhere); image i has sample index 100 + i."""
    cams = np.zeros((images, LABELS, size, size), dtype=np.float32)
    for (image, label), values in maps.items():
        cams[image, label] = values
    return localization_cases(cams, 100 + np.arange(images), np.array(boxes, dtype=np.int32), size)


def test_iobb_is_1_for_a_detected_box_inside_the_true_box_while_iou_is_the_area_ratio() -> None:
    detected, truth = np.array([2, 2, 2, 2]), np.array([0, 0, 8, 8])
    assert iobb(detected, truth) == 1.0
    assert iou(detected, truth) == pytest.approx(4 / 64)
    # The other way round IoBB divides by the big detected box: 4 / 64 too.
    assert iobb(truth, detected) == pytest.approx(4 / 64)


def test_iou_and_iobb_of_partly_overlapping_boxes_count_whole_pixels_and_broadcast() -> None:
    a, b = np.array([[0, 0, 4, 4]]), np.array([[2, 2, 4, 4], [4, 0, 2, 2]])  # 2 x 2 overlap; touching edge: none
    np.testing.assert_allclose(iou(a[:, None], b[None]), [[4 / 28, 0.0]])
    np.testing.assert_allclose(iobb(a[:, None], b[None]), [[4 / 16, 0.0]])


def test_cases_group_boxes_by_image_and_label_ignore_other_samples_and_clip_to_the_image() -> None:
    boxes = [(101, 3, 0, 0, 2, 2), (100, 5, 1, 1, 2, 2), (101, 3, 6, 6, 4, 4), (999, 0, 0, 0, 1, 1)]
    cases = _cases({}, boxes, 8, images=2)
    assert len(cases) == 2
    assert cases.image.tolist() == [0, 1] and cases.sample.tolist() == [100, 101] and cases.label.tolist() == [5, 3]
    assert cases.truth_boxes(1).tolist() == [[0, 0, 2, 2], [6, 6, 2, 2]]  # 4 x 4 at (6, 6) clipped to 8 x 8


def test_cases_refuse_a_box_outside_the_image_and_an_unknown_label() -> None:
    with pytest.raises(ValueError, match="no pixel inside"):
        _cases({}, [(100, 0, 8, 0, 2, 2)], 8)
    with pytest.raises(ValueError, match="label index 14"):
        _cases({}, [(100, 14, 0, 0, 2, 2)], 8)


def _peak(size: int, row: int, column: int) -> np.ndarray:
    values = np.zeros((size, size), dtype=np.float32)
    values[row, column] = 1.0
    return values


def test_a_maximum_on_the_box_corner_pixel_is_a_hit_and_one_pixel_outside_is_a_miss() -> None:
    box = (4, 4, 5, 3)  # covers x 4..8, y 4..6
    boxes = [(100 + i, 2, *box) for i in range(4)]
    maps = {(0, 2): _peak(16, 6, 8), (1, 2): _peak(16, 4, 4), (2, 2): _peak(16, 6, 9), (3, 2): _peak(16, 7, 8)}
    scores = score_cases(_cases(maps, boxes, 16, images=4))
    assert scores.hit.tolist() == [True, True, False, False]


def test_a_constant_map_points_at_the_centre_of_the_image() -> None:
    scores = score_cases(_cases({(0, 1): np.full((8, 8), 3.0), (1, 1): np.full((8, 8), 3.0)},
                                [(100, 1, 0, 0, 1, 1), (101, 1, 4, 4, 1, 1)], 8, images=2))
    assert scores.hit.tolist() == [False, True]  # the plateau's centroid (3.5, 3.5) rounds half to even: (4, 4)
    assert scores.detections.tolist() == [0, 0]  # normalised to zeros: nothing reaches 0.5


def test_a_coarse_maps_border_maximum_points_inside_its_cell_not_at_the_image_edge() -> None:
    from harness.evaluation.cams import normalise, pointing_location, upsample
    coarse = np.zeros((2, 2))
    coarse[0, 0] = 1.0  # the top-left cell of a 2 x 2 map at 48 px
    heat = normalise(upsample(coarse[None], 48))[0]
    assert int(np.argmax(heat)) == 0  # np.argmax would point at the image's corner pixel
    assert pointing_location(heat) == (6, 6)  # the plateau (pixels 0..11 each way) has its centroid at 5.5
    cams = np.zeros((1, LABELS, 2, 2), dtype=np.float32)
    cams[0, 3] = coarse
    scores = score_cases(localization_cases(cams, np.array([100]), np.array([[100, 3, 2, 2, 8, 8]], np.int32), 48))
    assert scores.hit.tolist() == [True]


def _two_blobs() -> np.ndarray:
    values = np.zeros((32, 32), dtype=np.float32)
    values[5:11, 5:11] = 1.0     # 36 pixels inside the true box (4, 4, 8, 8): IoBB 1, IoU 36 / 64
    values[20:26, 20:26] = 0.8   # 36 pixels far from it
    return values


def test_wang_accuracy_and_false_positives_count_the_blob_away_from_the_box() -> None:
    scores = score_cases(_cases({(0, 7): _two_blobs()}, [(100, 7, 4, 4, 8, 8)], 32), 0.5, "all")
    assert scores.detections.tolist() == [2]
    assert scores.correct_iobb[0.5].tolist() == [True] and scores.false_positives_iobb[0.5].tolist() == [1]
    assert scores.correct_iobb[0.9].tolist() == [True] and scores.false_positives_iobb[0.9].tolist() == [1]
    assert scores.correct_iou[0.5].tolist() == [True] and scores.false_positives_iou[0.5].tolist() == [1]
    assert scores.correct_iou[0.75].tolist() == [False] and scores.false_positives_iou[0.75].tolist() == [2]
    # Mask IoU: 36 common pixels, 72 + 64 - 36 = 100 in the union.
    assert scores.mask_iou.tolist() == [pytest.approx(0.36)]


def test_largest_component_keeps_one_box_and_no_false_positive() -> None:
    # The two blobs tie at 36 pixels; the one holding the maximum (on the box) is kept.
    scores = score_cases(_cases({(0, 7): _two_blobs()}, [(100, 7, 4, 4, 8, 8)], 32), 0.5, "largest")
    assert scores.detections.tolist() == [1]
    assert scores.correct_iobb[0.5].tolist() == [True] and scores.false_positives_iobb[0.5].tolist() == [0]
    assert scores.mask_iou.tolist() == [pytest.approx(36 / 64)]


def test_overlap_must_exceed_t_strictly_as_in_wang_et_al() -> None:
    # Centred box of an 8-pixel image: (2, 2, 4, 4); against the true box (0, 0, 4, 4) its IoBB is 4 / 16 = 0.25.
    assert centred_box(8).tolist() == [[2, 2, 4, 4]]
    scores = score_cases(_cases({}, [(100, 0, 0, 0, 4, 4)], 8))
    assert scores.centred_correct_iobb[0.1].tolist() == [True]
    assert scores.centred_correct_iobb[0.25].tolist() == [False]  # 0.25 is not > 0.25
    assert scores.centred_false_positives_iobb[0.25].tolist() == [1]
    assert scores.centred_mask_iou.tolist() == [pytest.approx(4 / 28)]
    assert scores.centred_correct_iou[0.1].tolist() == [True] and scores.centred_correct_iou[0.25].tolist() == [False]


def test_random_point_hit_is_the_union_area_of_overlapping_boxes_over_the_image_area() -> None:
    scores = score_cases(_cases({}, [(100, 4, 0, 0, 4, 4), (100, 4, 2, 2, 4, 4)], 8))
    assert scores.random_point_hit.tolist() == [pytest.approx(28 / 64)]  # 16 + 16 - 4 overlapping pixels
    assert box_mask(np.array([[0, 0, 4, 4], [2, 2, 4, 4]]), 8).sum() == 28


def _ringed_box(inner: float, ring: float) -> np.ndarray:
    """Map 0 outside, `ring` on the 6 x 6 square around the true box (2, 2, 4, 4), `inner` on the box and 1
    at one of its pixels: thresholds in (ring, inner] select exactly the box (IoU 1), lower ones 36
    pixels (16 / 36), higher ones one pixel (1 / 16)."""
    values = np.zeros((10, 10), dtype=np.float32)
    values[1:7, 1:7] = ring
    values[2:6, 2:6] = inner
    values[3, 3] = 1.0
    return values


def test_tuned_thresholds_pick_the_smallest_grid_value_with_the_best_mean_mask_iou() -> None:
    maps = {(0, 0): _ringed_box(0.62, 0.4), (1, 3): _ringed_box(0.32, 0.1)}
    cases = _cases(maps, [(100, 0, 2, 2, 4, 4), (101, 3, 2, 2, 4, 4)], 10, images=2)
    choice = tune_thresholds(cases, DEFAULT_GRID, "all", fixed=0.5)
    assert choice.thresholds[0] == pytest.approx(0.45) and choice.thresholds[3] == pytest.approx(0.15)
    assert choice.fell_back == tuple(j for j in range(LABELS) if j not in (0, 3))
    assert np.all(choice.thresholds[list(choice.fell_back)] == 0.5)
    assert choice.mean_iou[0, DEFAULT_GRID.index(0.4)] == pytest.approx(16 / 36)
    assert choice.mean_iou[0, DEFAULT_GRID.index(0.95)] == pytest.approx(1 / 16)
    assert np.isnan(choice.mean_iou[1]).all()
    # Scored with the tuned thresholds, both cases' masks are exactly their boxes.
    assert score_cases(cases, choice.thresholds).mask_iou.tolist() == [1.0, 1.0]


def test_score_cases_refuses_thresholds_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="14 finite numbers"):
        score_cases(_cases({}, [(100, 0, 0, 0, 4, 4)], 8), [0.5, 0.5])
