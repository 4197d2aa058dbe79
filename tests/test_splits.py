"""Splits are patient-wise: no patient is ever on two sides."""

from __future__ import annotations

import numpy as np
import pytest

from harness.data.datasets import load_dataset
from harness.data.splits import patient_wise_split


def assert_no_patient_in_two_parts(patient_ids, split):
    parts = {name: set(patient_ids[indices]) for name, indices in split.parts().items()}
    assert parts["train"].isdisjoint(parts["validation"])
    assert parts["train"].isdisjoint(parts["test"])
    assert parts["validation"].isdisjoint(parts["test"])
    every = np.sort(np.concatenate(list(split.parts().values())))
    assert np.array_equal(every, np.arange(len(patient_ids)))  # every sample exactly once


def test_phantom_default_split_has_no_patient_in_two_parts(tmp_path):
    store = load_dataset("phantom", 32, seed=0, cache=tmp_path)
    split = patient_wise_split(store.patient_ids, seed=0)
    assert_no_patient_in_two_parts(store.patient_ids, split)
    # Several images per patient, so a sample-wise split would have leaked.
    assert len(store) > 1.5 * len(np.unique(store.patient_ids))


@pytest.mark.parametrize("seed", range(5))
def test_random_patient_ids_never_leak(seed):
    rng = np.random.default_rng(seed)
    patient_ids = rng.integers(0, 300, size=2000)
    split = patient_wise_split(patient_ids, (0.6, 0.2, 0.2), seed)
    assert_no_patient_in_two_parts(patient_ids, split)
    share = len(np.unique(patient_ids[split.train])) / len(np.unique(patient_ids))
    assert abs(share - 0.6) < 0.01


def test_same_seed_same_split_other_seed_other_split():
    patient_ids = np.repeat(np.arange(100), 3)
    a, b, c = (patient_wise_split(patient_ids, seed=s) for s in (1, 1, 2))
    assert np.array_equal(a.test, b.test)
    assert not np.array_equal(a.test, c.test)


def test_too_few_patients_is_a_clear_error():
    with pytest.raises(ValueError, match="validation: no patient left"):
        patient_wise_split(np.array([1, 1, 2, 2]), (0.5, 0.1, 0.4))
