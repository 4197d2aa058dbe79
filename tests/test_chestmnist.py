"""ChestMNIST: MedMNIST .npz files at any size, their own split, and a plain statement that patients are unknown."""

from __future__ import annotations

import numpy as np
import pytest

from harness.data.datasets import load_dataset
from harness.data.datasets.bad_input import DatasetError
from harness.data.datasets.chestmnist import NO_BOXES, resolve_file
from harness.data.datasets.summary import summary_lines
from harness.data.split_plan import plan_splits
from harness.data.pixel_store import PRESET_TEST, PRESET_TRAIN, PRESET_VALIDATION

COUNTS = {"train": 40, "val": 12, "test": 16}


def write_chestmnist(path, size: int = 28, seed: int = 0, **overrides) -> dict:
    """A ChestMNIST-format file: uint8 (N, S, S) images and (N, 14) 0/1 labels per part."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for part, count in COUNTS.items():
        arrays[f"{part}_images"] = rng.integers(0, 256, (count, size, size), dtype=np.uint8)
        arrays[f"{part}_labels"] = (rng.random((count, 14)) < 0.3).astype(np.uint8)
    arrays.update(overrides)
    arrays = {key: value for key, value in arrays.items() if value is not None}
    np.savez_compressed(path, **arrays)
    return arrays


def test_parts_keep_medmnist_split_and_bytes(tmp_path):
    arrays = write_chestmnist(tmp_path / "chestmnist_64.npz", size=64)
    store = load_dataset(f"chestmnist:{tmp_path / 'chestmnist_64.npz'}", 64, seed=0, cache=tmp_path / "cache")
    assert len(store) == 68
    assert np.array_equal(store.pixels[:40], arrays["train_images"])
    assert np.array_equal(store.pixels[52:], arrays["test_images"])
    assert np.array_equal(store.labels[40:52], arrays["val_labels"])
    assert list(np.bincount(store.split_codes)[[PRESET_TRAIN, PRESET_VALIDATION, PRESET_TEST]]) == [40, 12, 16]
    assert "no patient ids" in store.notes["no_patient_ids"]
    split = plan_splits(store, (0.7, 0.1, 0.2), seed=0).splits[0]
    assert list(map(len, (split.train, split.validation, split.test))) == [40, 12, 16]


def test_folds_pool_train_and_validation_and_keep_test(tmp_path):
    write_chestmnist(tmp_path / "chestmnist.npz")
    store = load_dataset(f"chestmnist:{tmp_path}", 32, seed=0, cache=tmp_path / "cache")
    plan = plan_splits(store, (0.7, 0.1, 0.2), seed=0, folds=4)
    assert len(plan.splits) == 4
    validations = np.sort(np.concatenate([split.validation for split in plan.splits]))
    assert np.array_equal(validations, np.arange(52))  # every train+val image validates exactly once
    for split in plan.splits:
        assert np.array_equal(split.test, np.arange(52, 68))


def test_28_pixel_file_is_resized_and_the_report_says_so(tmp_path):
    write_chestmnist(tmp_path / "chestmnist.npz")
    store = load_dataset(f"chestmnist:{tmp_path / 'chestmnist.npz'}", 32, seed=0, cache=tmp_path / "cache")
    assert store.image_size == 32 and store.notes["resized"] == "resized from 28x28 to 32x32"
    summary = "\n".join(summary_lines(store))
    assert "68 images of 68 patients at 32x32" in summary and "ChestMNIST carries no patient ids" in summary


def test_chestmnist_has_no_boxes_and_the_summary_says_localisation_is_not_scored(tmp_path):
    write_chestmnist(tmp_path / "chestmnist.npz")
    store = load_dataset(f"chestmnist:{tmp_path / 'chestmnist.npz'}", 28, seed=0, cache=tmp_path / "cache")
    assert store.boxes.shape == (0, 6) and store.boxes.dtype == np.int32
    assert store.notes["bounding_boxes"] == NO_BOXES == "ChestMNIST has no bounding boxes: localisation is not scored"
    assert NO_BOXES in summary_lines(store)


def test_folder_resolves_to_the_nearest_size_above(tmp_path):
    for size in (28, 64, 128):
        name = "chestmnist.npz" if size == 28 else f"chestmnist_{size}.npz"
        (tmp_path / name).touch()
    assert resolve_file(tmp_path, 64).name == "chestmnist_64.npz"
    assert resolve_file(tmp_path, 100).name == "chestmnist_128.npz"
    assert resolve_file(tmp_path, 224).name == "chestmnist_128.npz"


def test_missing_array_is_named(tmp_path):
    write_chestmnist(tmp_path / "chestmnist.npz", val_labels=None)
    with pytest.raises(DatasetError, match=r"chestmnist.npz: no array 'val_labels' \(found: test_images, test_labels, train_images, train_labels, val_images\)"):
        load_dataset(f"chestmnist:{tmp_path / 'chestmnist.npz'}", 32, seed=0, cache=tmp_path / "cache")


def test_labels_other_than_0_or_1_name_the_row(tmp_path):
    labels = np.zeros((16, 14), np.uint8)
    labels[5, 3] = 2
    write_chestmnist(tmp_path / "chestmnist.npz", test_labels=labels)
    with pytest.raises(DatasetError, match="row 5 of 'test_labels' holds"):
        load_dataset(f"chestmnist:{tmp_path / 'chestmnist.npz'}", 32, seed=0, cache=tmp_path / "cache")


def test_colour_images_are_refused(tmp_path):
    write_chestmnist(tmp_path / "chestmnist.npz", train_images=np.zeros((40, 28, 28, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"'train_images' has shape \(40, 28, 28, 3\)"):
        load_dataset(f"chestmnist:{tmp_path / 'chestmnist.npz'}", 32, seed=0, cache=tmp_path / "cache")


def test_not_a_zip_is_named(tmp_path):
    (tmp_path / "chestmnist.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="not a readable .npz file"):
        load_dataset(f"chestmnist:{tmp_path / 'chestmnist.npz'}", 32, seed=0, cache=tmp_path / "cache")
