"""Patient-wise splits: every image of a patient lands on the same side, always."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    """Sample indices (into the pixel store) of each part, sorted ascending."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray

    def parts(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


def patient_wise_split(
    patient_ids: np.ndarray, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2), seed: int = 0
) -> Split:
    """Split samples into train / validation / test by patient.

    The unique patients are shuffled with `seed` and cut by the given fractions of patients; each
    sample follows its patient. Raises ValueError when a part would get no patient.
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions: {fractions} must be three non-negative numbers summing to 1")
    patients = np.unique(patient_ids)
    shuffled = np.random.default_rng(seed).permutation(patients)
    cut_train = int(round(fractions[0] * len(shuffled)))
    cut_val = cut_train + int(round(fractions[1] * len(shuffled)))
    groups = (shuffled[:cut_train], shuffled[cut_train:cut_val], shuffled[cut_val:])
    for name, group, fraction in zip(("train", "validation", "test"), groups, fractions, strict=True):
        if fraction > 0 and len(group) == 0:
            raise ValueError(f"{name}: no patient left for this part ({len(patients)} patients in all)")
    parts = [np.flatnonzero(np.isin(patient_ids, group)) for group in groups]
    return Split(*parts)

