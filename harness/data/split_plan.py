"""Which samples train, select and test, for one split or for K cross-validation folds.

The test set is decided first and never changes between folds: the dataset's own test split when it
has one (NIH's official test_list.txt, MedMNIST's test arrays), otherwise a patient-wise hold-out.
Only the remaining patients are split into training and validation, or into K folds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.data.folds import fold_balance, fold_split, patient_wise_folds
from harness.data.pixel_store import PRESET_TEST, PRESET_TRAIN, PRESET_VALIDATION, PixelStore
from harness.data.splits import Split, patient_wise_split


@dataclass(frozen=True)
class SplitPlan:
    """One Split per fold (a single one without cross-validation) and how they were made."""

    splits: tuple[Split, ...]
    test_source: str  # for the report: where the held-out test set comes from
    validation_source: str
    balance: dict | None = None  # per-fold counts when cross-validating

    @property
    def cross_validated(self) -> bool:
        return len(self.splits) > 1


def _validation_fraction(fractions: tuple[float, float, float]) -> float:
    return fractions[1] / (fractions[0] + fractions[1])


def _split_rest(store: PixelStore, rest: np.ndarray, test: np.ndarray, fractions, seed: int) -> Split:
    """Train / validation by patient among `rest`; `test` as given."""
    inner = patient_wise_split(
        store.patient_ids[rest], (1 - _validation_fraction(fractions), _validation_fraction(fractions), 0.0), seed
    )
    return Split(train=rest[inner.train], validation=rest[inner.validation], test=np.sort(test))


def _folds(
    store: PixelStore, rest: np.ndarray, test: np.ndarray, folds: int, seed: int
) -> tuple[tuple[Split, ...], dict]:
    fold_of = np.full(len(store), -1, np.int64)  # -1: the held-out test set, in no fold
    fold_of[rest] = patient_wise_folds(store.patient_ids[rest], store.labels[rest], folds, seed)
    splits = tuple(fold_split(store.patient_ids, fold_of, k, test) for k in range(folds))  # refuses a leak
    balance = fold_balance(store.labels[rest], fold_of[rest], folds, store.patient_ids[rest])
    return splits, balance


def plan_splits(store: PixelStore, fractions: tuple[float, float, float], seed: int, folds: int = 1) -> SplitPlan:
    """The splits of a run: `folds` == 1 gives one train / validation / test split, K > 1 gives K folds.

    Every split is patient-wise. `fractions` (train, validation, test) apply only where the dataset
    has no split of its own: the test fraction to the hold-out, train : validation to the rest.
    """
    codes = store.split_codes
    if (codes == PRESET_TEST).any():
        test = np.flatnonzero(codes == PRESET_TEST)
        rest = np.flatnonzero(codes != PRESET_TEST)
        test_source = "the dataset's own test split"
        if folds > 1:
            splits, balance = _folds(store, rest, test, folds, seed)
            return SplitPlan(splits, test_source, f"{folds} patient-wise folds of the other images", balance)
        if (codes == PRESET_VALIDATION).any():
            split = Split(np.flatnonzero(codes == PRESET_TRAIN), np.flatnonzero(codes == PRESET_VALIDATION), test)
            return SplitPlan((split,), test_source, "the dataset's own validation split")
        validation = f"{_validation_fraction(fractions):.1%} of the other patients"
        return SplitPlan((_split_rest(store, rest, test, fractions, seed),), test_source, validation)
    if folds > 1:
        hold_out = patient_wise_split(store.patient_ids, (1 - fractions[2], 0.0, fractions[2]), seed)
        splits, balance = _folds(store, hold_out.train, hold_out.test, folds, seed)
        return SplitPlan(splits, f"a patient-wise hold-out of {fractions[2]:.0%} of patients",
                         f"{folds} patient-wise folds of the other patients", balance)
    split = patient_wise_split(store.patient_ids, fractions, seed)
    return SplitPlan((split,), f"a patient-wise hold-out of {fractions[2]:.0%} of patients",
                     f"a patient-wise {fractions[1]:.0%} of patients")
