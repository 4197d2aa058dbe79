"""Augmentation: parsed strictly, drawn from (seed, epoch, sample) only, flip and rotation exact."""

from __future__ import annotations

import numpy as np
import pytest

from cxrbench.worker.v1.tensors import decode_tensor
from harness.data.augmentation import ACCEPTED, Augmentation, AugmentedPixels, augment_batch, epoch_parameters
from harness.data.batches import training_batches


def random_store(samples: int = 20, height: int = 24, width: int = 24, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(samples, height, width), dtype=np.uint8)


@pytest.mark.parametrize(
    ("spec", "flip", "degrees"),
    [
        ("none", False, 0.0),
        ("flip,rotate=20", True, 20.0),
        ("rotate=10", False, 10.0),
        ("flip", True, 0.0),
        ("rotate=12.5,flip", True, 12.5),
        (" flip , rotate=180 ", True, 180.0),
    ],
)
def test_parse_accepts_the_documented_forms(spec, flip, degrees):
    assert Augmentation.parse(spec) == Augmentation(flip=flip, rotate_degrees=degrees)


def test_default_is_the_reference_study_flip_and_20_degrees():
    assert Augmentation() == Augmentation.parse("flip,rotate=20")
    assert Augmentation().spec == "flip,rotate=20"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("blur", "--augment: unknown item 'blur' in 'blur'"),
        ("flip,crop", "--augment: unknown item 'crop' in 'flip,crop'"),
        ("", "--augment: unknown item '' in ''"),
        ("flip,", "--augment: unknown item '' in 'flip,'"),
        ("rotate", "--augment: unknown item 'rotate' in 'rotate'"),
        ("flip,flip", "--augment: 'flip' is given twice in 'flip,flip'"),
        ("rotate=5,rotate=10", "--augment: 'rotate=10' is given twice in 'rotate=5,rotate=10'"),
        ("none,flip", "--augment: 'none' cannot be combined with other items in 'none,flip'"),
        ("rotate=0", "--augment: 'rotate=0' needs a number of degrees with 0 < DEG <= 180"),
        ("rotate=181", "--augment: 'rotate=181' needs a number of degrees with 0 < DEG <= 180"),
        ("rotate=-5", "--augment: 'rotate=-5' needs a number of degrees with 0 < DEG <= 180"),
        ("rotate=ten", "--augment: 'rotate=ten' needs a number of degrees with 0 < DEG <= 180"),
        ("rotate=nan", "--augment: 'rotate=nan' needs a number of degrees with 0 < DEG <= 180"),
    ],
)
def test_parse_refuses_bad_items_naming_the_item_and_the_accepted_forms(spec, message):
    with pytest.raises(ValueError) as error:
        Augmentation.parse(spec)
    assert str(error.value) == f"{message} (accepted: {ACCEPTED})"


def test_accepted_forms_are_spelled_out():
    assert ACCEPTED == "'none', or comma-separated 'flip' and 'rotate=DEG' with 0 < DEG <= 180 (e.g. 'flip,rotate=20')"


def test_rotation_outside_0_to_180_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"^--augment: rotation 200 degrees is outside 0 to 180$"):
        Augmentation(rotate_degrees=200)


@pytest.mark.parametrize("spec", ["none", "flip", "rotate=10", "flip,rotate=20", "flip,rotate=12.5"])
def test_spec_round_trips_through_parse(spec):
    assert Augmentation.parse(spec).spec == spec
    assert Augmentation.parse(Augmentation.parse(spec).spec) == Augmentation.parse(spec)


@pytest.mark.parametrize(
    ("spec", "text", "enabled"),
    [
        (
            "flip,rotate=20",
            "random horizontal flip (p=0.5) and rotation uniformly within +-20 degrees, bilinear, zero fill",
            True,
        ),
        ("flip", "random horizontal flip (p=0.5)", True),
        ("rotate=10", "rotation uniformly within +-10 degrees, bilinear, zero fill", True),
        ("none", "none", False),
    ],
)
def test_describe_and_enabled_say_what_is_done(spec, text, enabled):
    aug = Augmentation.parse(spec)
    assert aug.describe() == text
    assert aug.enabled is enabled


def test_a_sample_gets_the_same_bytes_whatever_its_batch_and_position():
    store = random_store()
    pixels = AugmentedPixels(store, Augmentation(), seed=7, epoch=3)
    first = pixels[np.array([5, 9])][0]
    second = pixels[np.array([3, 5])][1]
    again = AugmentedPixels(store, Augmentation(), seed=7, epoch=3)[np.array([5])][0]
    assert np.array_equal(first, second)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, store[5])  # it was augmented, so the comparison means something


def test_another_epoch_or_seed_gives_other_bytes():
    store = random_store()
    indices = np.arange(len(store))
    base = AugmentedPixels(store, Augmentation(), seed=7, epoch=3)[indices]
    other_epoch = AugmentedPixels(store, Augmentation(), seed=7, epoch=4)[indices]
    other_seed = AugmentedPixels(store, Augmentation(), seed=8, epoch=3)[indices]
    for other in (other_epoch, other_seed):
        differing = [i for i in indices if not np.array_equal(base[i], other[i])]
        assert len(differing) == len(store)


def test_flip_with_zero_angle_is_an_exact_mirror():
    store = random_store(3, 24, 31)
    out = augment_batch(store, np.array([True, False, True]), np.zeros(3))
    assert np.array_equal(out[0], store[0][:, ::-1])
    assert np.array_equal(out[1], store[1])
    assert np.array_equal(out[2], np.fliplr(store[2]))


def test_zero_angle_without_flip_is_an_exact_copy_in_a_new_array():
    store = random_store(2)
    out = augment_batch(store, np.zeros(2, bool), np.zeros(2))
    assert np.array_equal(out, store)
    out[0, 0, 0] ^= 0xFF
    assert not np.shares_memory(out, store)


@pytest.mark.parametrize("size", [24, 31])
def test_positive_90_degrees_turns_a_square_image_counter_clockwise_like_rot90(size):
    store = random_store(2, size, size)
    out = augment_batch(store, np.array([False, False]), np.array([90.0, -90.0]))
    assert np.array_equal(out[0], np.rot90(store[0]))  # counter-clockwise
    assert np.array_equal(out[1], np.rot90(store[1], k=-1))  # clockwise
    # Counter-clockwise, said in pixels: the top-right corner lands top-left.
    assert out[0][0, 0] == store[0][0, size - 1]


def test_flip_comes_before_rotation():
    store = random_store(1, 24, 24)
    out = augment_batch(store, np.array([True]), np.array([90.0]))
    assert np.array_equal(out[0], np.rot90(np.fliplr(store[0])))


def test_180_degrees_of_a_non_square_image_is_exact_about_the_centre():
    store = random_store(1, 24, 33)
    out = augment_batch(store, np.array([False]), np.array([180.0]))
    assert np.array_equal(out[0], store[0][::-1, ::-1])


def test_small_rotation_keeps_the_centre_and_zero_fills_the_corners():
    store = np.full((1, 31, 31), 200, dtype=np.uint8)
    out = augment_batch(store, np.array([False]), np.array([20.0]))
    assert out[0, 15, 15] == 200
    assert out[0, 0, 0] == 0 and out[0, 30, 30] == 0


def test_parameters_lie_within_the_angle_and_about_half_are_flipped():
    flips, angles = epoch_parameters(Augmentation(flip=True, rotate_degrees=20), 10_000, seed=0, epoch=0)
    assert flips.dtype == np.bool_ and angles.dtype == np.float64
    assert flips.shape == angles.shape == (10_000,)
    assert np.abs(angles).max() <= 20
    assert angles.min() < -19.9 and angles.max() > 19.9  # uniform over the whole range
    assert abs(angles.mean()) < 0.5  # 4 standard errors
    assert 0.48 < flips.mean() < 0.52  # 4 standard errors


def test_disabled_parts_draw_nothing_and_leave_the_other_part_unchanged():
    full_flips, full_angles = epoch_parameters(Augmentation(), 1000, seed=1, epoch=2)
    flips, angles = epoch_parameters(Augmentation(flip=False), 1000, seed=1, epoch=2)
    assert not flips.any() and np.array_equal(angles, full_angles)
    flips, angles = epoch_parameters(Augmentation(rotate_degrees=0), 1000, seed=1, epoch=2)
    assert not angles.any() and np.array_equal(flips, full_flips)


def test_none_returns_the_raw_bytes():
    store = random_store()
    indices = np.array([4, 1, 4])
    assert np.array_equal(AugmentedPixels(store, Augmentation.parse("none"), 0, 0)[indices], store[indices])


def test_augmented_pixels_keep_shape_dtype_and_length_of_a_memmap_store(tmp_path):
    store = np.memmap(tmp_path / "pixels.u8", dtype=np.uint8, mode="w+", shape=(12, 20, 28))
    store[:] = random_store(12, 20, 28)
    pixels = AugmentedPixels(store, Augmentation(), seed=0, epoch=0)
    assert pixels.shape == (12, 20, 28) and pixels.dtype == np.uint8 and len(pixels) == 12
    batch = pixels[np.array([11, 0, 3])]
    assert batch.shape == (3, 20, 28) and batch.dtype == np.uint8
    assert np.array_equal(pixels[3], batch[2])  # a single index gives one image


def test_training_batches_carry_the_augmented_bytes():
    store = random_store()
    labels = np.zeros((len(store), 14), dtype=np.uint8)
    pixels = AugmentedPixels(store, Augmentation(), seed=0, epoch=1)
    chunks = [np.array([3, 7, 1]), np.array([0, 19, 8])]
    for chunk, batch in zip(chunks, training_batches(pixels, labels, chunks)):
        assert np.array_equal(decode_tensor(batch.pixels, "pixels"), pixels[chunk])


def test_augment_batch_refuses_mismatched_parameters():
    message = r"^augment_batch: pixels \(2, 24, 24\) \(expected \(n, H, W\)\), 3 flips, 2 angles$"
    with pytest.raises(ValueError, match=message):
        augment_batch(random_store(2), np.zeros(3, bool), np.zeros(2))


def test_non_uint8_pixels_are_refused():
    with pytest.raises(ValueError, match=r"^augment_batch: pixels are float32, expected uint8"):
        augment_batch(np.zeros((1, 4, 4), np.float32), np.zeros(1, bool), np.zeros(1))
    with pytest.raises(ValueError, match=r"^AugmentedPixels: pixels float32 \(1, 4, 4\), expected uint8 \(N, H, W\)$"):
        AugmentedPixels(np.zeros((1, 4, 4), np.float32), Augmentation(), seed=0, epoch=0)
