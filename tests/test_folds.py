"""K-fold cross-validation is patient-grouped and label-stratified, and deterministic from its seed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.data.datasets.phantom_labels import reference_prevalence
from harness.data.folds import fold_balance, fold_split, patient_wise_folds

SEEDS = range(8)
FOLD_COUNTS = range(2, 6)


def synthetic_index(patients: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Patient ids and 14 labels with ChestX-ray14 prevalences, findings persistent per patient.

    Images per patient are geometric with mean 3.64 (the reference mean), capped at 60; ids are
    scattered, not 0..P-1, and samples of a patient are contiguous as in Data_Entry_2017.csv.
    A patient has a finding with probability prevalence / 0.6; each of their images shows it with
    probability 0.6. About 7,200 images for 2,000 patients; Hernia on 7 to 33 images of 3 to 9.
    """
    rng = np.random.default_rng(seed)
    sizes = np.minimum(rng.geometric(1 / 3.64, patients), 60)
    owner = np.repeat(np.arange(patients), sizes)
    patient_ids = (rng.permutation(patients) * 7 + 1000)[owner]
    has = rng.random((patients, 14)) < reference_prevalence() / 0.6
    labels = (has[owner] & (rng.random((len(owner), 14)) < 0.6)).astype(np.uint8)
    return patient_ids, labels


@pytest.fixture(scope="module")
def indexes() -> dict[int, tuple[np.ndarray, np.ndarray]]:
    return {seed: synthetic_index(2000, seed) for seed in SEEDS}


def folds_per_patient(patient_ids: np.ndarray, fold_of: np.ndarray) -> np.ndarray:
    """How many distinct folds each patient's images fall in."""
    pairs = np.unique(np.stack([patient_ids, fold_of]), axis=1)
    return np.unique(pairs[0], return_counts=True)[1]


@pytest.mark.parametrize("folds", FOLD_COUNTS)
@pytest.mark.parametrize("seed", SEEDS)
def test_every_patient_has_all_images_in_one_fold(indexes, seed, folds):
    patient_ids, labels = indexes[seed]
    fold_of = patient_wise_folds(patient_ids, labels, folds, seed)
    assert fold_of.shape == patient_ids.shape
    assert set(fold_of.tolist()) == set(range(folds))
    assert folds_per_patient(patient_ids, fold_of).max() == 1


@pytest.mark.parametrize("folds", FOLD_COUNTS)
def test_fold_split_parts_share_no_patient_and_cover_every_sample_once(indexes, folds):
    patient_ids, labels = indexes[0]
    test_patients = np.random.default_rng(0).permutation(np.unique(patient_ids))[:400]
    is_test = np.isin(patient_ids, test_patients)
    rest = np.flatnonzero(~is_test)
    fold_of = np.full(len(patient_ids), -1)
    fold_of[rest] = patient_wise_folds(patient_ids[rest], labels[rest], folds, seed=0)
    validations = []
    for fold in range(folds):
        split = fold_split(patient_ids, fold_of, fold, np.flatnonzero(is_test)[::-1])
        parts = {name: set(patient_ids[indices].tolist()) for name, indices in split.parts().items()}
        assert parts["train"].isdisjoint(parts["validation"])
        assert parts["train"].isdisjoint(parts["test"])
        assert parts["validation"].isdisjoint(parts["test"])
        every = np.concatenate(list(split.parts().values()))
        assert np.array_equal(np.sort(every), np.arange(len(patient_ids)))
        for indices in split.parts().values():
            assert np.all(np.diff(indices) > 0)  # sorted ascending
        validations.append(split.validation)
    # Each non-test sample is validated exactly once across the folds.
    assert np.array_equal(np.sort(np.concatenate(validations)), rest)


def test_same_seed_gives_identical_folds(indexes):
    patient_ids, labels = indexes[1]
    first = patient_wise_folds(patient_ids, labels, 5, seed=42)
    second = patient_wise_folds(patient_ids.copy(), labels.copy(), 5, seed=42)
    assert np.array_equal(first, second)


def test_other_seed_gives_other_folds(indexes):
    patient_ids, labels = indexes[1]
    first = patient_wise_folds(patient_ids, labels, 5, seed=42)
    second = patient_wise_folds(patient_ids, labels, 5, seed=43)
    # Far from a relabelling of the same folds: a large share of samples move.
    assert np.mean(first != second) > 0.5


@pytest.mark.parametrize("folds", FOLD_COUNTS)
@pytest.mark.parametrize("seed", SEEDS)
def test_every_fold_has_positives_of_labels_with_at_least_k_positive_patients(indexes, seed, folds):
    patient_ids, labels = indexes[seed]
    fold_of = patient_wise_folds(patient_ids, labels, folds, seed)
    checked = 0
    for label in range(labels.shape[1]):
        positive = labels[:, label] > 0
        if len(np.unique(patient_ids[positive])) >= folds:
            checked += 1
            assert np.bincount(fold_of[positive], minlength=folds).min() > 0, f"label {label} missing from a fold"
    assert checked >= labels.shape[1] - 1  # all but Hernia at least (3 to 9 positive patients)


@pytest.mark.parametrize("folds", FOLD_COUNTS)
@pytest.mark.parametrize("seed", SEEDS)
def test_common_label_counts_per_fold_within_5_percent_of_their_share(indexes, seed, folds):
    # Measured worst case over these seeds and K: 1.7%; random patient-wise folds: 34% (median).
    patient_ids, labels = indexes[seed]
    fold_of = patient_wise_folds(patient_ids, labels, folds, seed)
    totals = labels.sum(axis=0)
    common = np.flatnonzero(totals >= 300)
    assert len(common) >= 5
    for label in common:
        counts = np.bincount(fold_of, weights=labels[:, label], minlength=folds)
        share = totals[label] / folds
        assert np.abs(counts - share).max() <= 0.05 * share, f"label {label}: {counts} vs {share:.1f} each"


@pytest.mark.parametrize("folds", FOLD_COUNTS)
def test_fold_sizes_within_1_percent_of_an_equal_share(indexes, folds):
    patient_ids, labels = indexes[2]
    sizes = np.bincount(patient_wise_folds(patient_ids, labels, folds, seed=2), minlength=folds)
    share = len(patient_ids) / folds
    assert np.abs(sizes - share).max() <= 0.01 * share, sizes


def test_as_many_folds_as_patients_puts_one_patient_in_each():
    patient_ids = np.repeat([10, 20, 30], [4, 1, 2])
    labels = np.zeros((7, 3), dtype=np.uint8)
    fold_of = patient_wise_folds(patient_ids, labels, 3, seed=0)
    assert {int(fold_of[patient_ids == patient][0]) for patient in (10, 20, 30)} == {0, 1, 2}
    assert folds_per_patient(patient_ids, fold_of).max() == 1


@pytest.mark.parametrize("folds", [1, 0, -3, 4])
def test_bad_fold_count_is_refused_naming_folds_and_patient_count(folds):
    patient_ids = np.repeat([10, 20, 30], 2)
    message = rf"^--folds: {folds} must be an integer from 2 to the number of patients \(3\)$"
    with pytest.raises(ValueError, match=message):
        patient_wise_folds(patient_ids, np.zeros((6, 14), np.uint8), folds, seed=0)


def test_labels_of_another_length_are_refused():
    with pytest.raises(ValueError, match=r"^labels: shape \(5, 14\) does not match 6 patient ids"):
        patient_wise_folds(np.arange(6), np.zeros((5, 14), np.uint8), 2, seed=0)


def test_fold_split_refuses_a_test_patient_with_images_in_the_folds():
    patient_ids = np.array([1, 1, 2, 2, 3, 3])
    fold_of = np.array([0, -1, 1, 1, 0, 0])  # patient 1 straddles fold 0 and the test set
    message = r"^test: 1 test patients also have images in the folds \(e.g. patient 1\); hold out whole patients$"
    with pytest.raises(ValueError, match=message):
        fold_split(patient_ids, fold_of, 0, np.array([1]))


def test_fold_split_refuses_a_test_sample_that_is_in_a_fold():
    patient_ids = np.array([1, 1, 2, 2])
    with pytest.raises(ValueError, match=r"^test: 2 test samples are also in a fold"):
        fold_split(patient_ids, np.array([0, 0, 1, 1]), 0, np.array([0, 1]))


def test_fold_split_refuses_a_fold_out_of_range():
    with pytest.raises(ValueError, match=r"^--fold: 2 is not a fold of this split \(folds 0 to 1\)$"):
        fold_split(np.array([1, 2]), np.array([0, 1]), 2, np.array([], dtype=np.int64))


def test_fold_balance_counts_images_patients_and_positives_as_plain_json():
    patient_ids = np.array([1, 1, 2, 3, 3, 3, 4])
    labels = np.array([[1, 0], [1, 1], [0, 0], [0, 1], [0, 1], [1, 1], [1, 0]], dtype=np.uint8)
    fold_of = np.array([0, 0, 1, 1, 1, 1, -1])  # the last sample is held-out test: not counted
    balance = fold_balance(labels, fold_of, 2, patient_ids)
    assert balance == {
        "folds": 2,
        "per_fold": [
            {"fold": 0, "images": 2, "patients": 1, "positives": [2, 1]},
            {"fold": 1, "images": 4, "patients": 2, "positives": [1, 3]},
        ],
    }
    assert json.loads(json.dumps(balance)) == balance
