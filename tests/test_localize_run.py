"""The training side of localisation: which images get maps, the head weight, the option's rules."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from safetensors.numpy import save as save_safetensors

from harness.config import BenchmarkConfig
from harness.training.localize import boxed_images, gallery_images, head_weight


@dataclass
class _Store:
    boxes: np.ndarray


BOXES = np.array([
    # sample, label, x, y, w, h
    [1, 0, 1, 1, 2, 2], [1, 3, 0, 0, 4, 4], [4, 0, 2, 2, 1, 1], [6, 0, 0, 0, 1, 1], [7, 0, 5, 5, 2, 2],
    [9, 2, 1, 1, 3, 3],
], np.int32)


def test_only_boxed_images_of_the_part_get_maps_in_store_order_and_within_the_bound():
    store = _Store(BOXES)
    assert boxed_images(store, np.array([0, 1, 2, 4, 9])).tolist() == [1, 4, 9]
    assert boxed_images(store, np.array([0, 2, 3])).tolist() == []
    assert boxed_images(store, np.array([1, 4, 6, 7, 9]), limit=2).tolist() == [1, 4]
    assert boxed_images(_Store(np.zeros((0, 6), np.int32)), np.arange(5)).tolist() == []


def test_the_gallery_takes_the_first_test_images_of_each_finding():
    store = _Store(BOXES)
    # label 0 on test images 1, 4, 6, 7 -> 1, 4; label 3 on 1; label 2 on 9 (not a test image here)
    assert gallery_images(store, np.array([1, 4, 6, 7]), per_finding=2).tolist() == [1, 4]
    assert gallery_images(store, np.array([1, 4, 6, 7, 9]), per_finding=1).tolist() == [1, 9]


def test_the_head_weight_is_read_by_its_torchvision_name():
    weight = np.arange(14 * 2048, dtype=np.float32).reshape(14, 2048)
    data = save_safetensors({"fc.weight": weight, "fc.bias": np.zeros(14, np.float32)})
    assert np.array_equal(head_weight(data, "resnet50", 14), weight)
    with pytest.raises(ValueError, match="classifier.weight"):
        head_weight(data, "densenet121", 14)


def test_localize_is_automatic_where_there_are_boxes_and_refused_on_without_them():
    assert BenchmarkConfig().localizes(boxes=10)
    assert not BenchmarkConfig().localizes(boxes=0)
    assert not BenchmarkConfig(localize="off").localizes(boxes=10)
    with pytest.raises(ValueError, match="--localize: .*no bounding boxes"):
        BenchmarkConfig(localize="on").localizes(boxes=0)


@pytest.mark.parametrize("value, ok", [("tuned", True), ("0.3", True), ("0", False), ("1.5", False), ("high", False)])
def test_cam_threshold_is_tuned_or_a_fraction(value, ok):
    if ok:
        BenchmarkConfig(cam_threshold=value)
    else:
        with pytest.raises(ValueError, match="--cam-threshold"):
            BenchmarkConfig(cam_threshold=value)
