"""Patient-grouped, label-stratified K-fold cross-validation.

Every image of a patient lands in one fold, always. Within that constraint the folds are balanced
in label counts by a greedy iterative stratification over patients (after Sechidis et al., 2011,
"On the stratification of multi-label data", with patients as the unit): patients carrying the
rarest labels are placed first, each into the fold that still lacks most of its labels.

A held-out test set is kept out of the folds by the caller: fold only the remaining samples and
mark the test samples -1 in the full-length fold array (see `fold_split`).
"""

from __future__ import annotations

import numpy as np

from harness.data.splits import Split


def _patient_tables(patient_ids: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sample patient number, per-patient image count and per-patient label counts (P, L)."""
    _, inverse = np.unique(patient_ids, return_inverse=True)
    inverse = inverse.ravel()
    patients = int(inverse.max()) + 1 if len(inverse) else 0
    images = np.bincount(inverse, minlength=patients)
    # One bincount per label: much faster than np.add.at over (N, L) for 14 labels.
    counts = np.stack(
        [np.bincount(inverse, weights=labels[:, label], minlength=patients) for label in range(labels.shape[1])],
        axis=1,
    ).astype(np.int64)
    return inverse, images, counts.reshape(patients, labels.shape[1])


def _visiting_order(images: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Patients in seeded-random order, then stably: rarest label first, more images first."""
    positive_patients = (counts > 0).sum(axis=0)
    # A patient's rarity is the positive-patient count of its rarest label; no label: last.
    rarity = np.where(counts > 0, positive_patients, len(images) + 1).min(axis=1, initial=len(images) + 1)
    shuffled = rng.permutation(len(images))
    key = rarity[shuffled] * (int(images.max()) + 1) + (int(images.max()) - images[shuffled])
    return shuffled[np.argsort(key, kind="stable")]


def patient_wise_folds(patient_ids: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold (0..folds-1) of every sample: patient-grouped, stratified by label.

    Patients are visited rarest label first (more images first among equals, seeded-random order
    otherwise) and each goes to the fold with the largest remaining demand for its labels, each
    label's demand normalised by its total so rare labels weigh as much as common ones; ties go to
    the fold lacking most images, then to a seeded-random fold. Same inputs and seed give the same
    array. Raises ValueError when `folds` is below 2 or above the number of patients.
    """
    patient_ids = np.asarray(patient_ids)
    labels = np.asarray(labels)
    if labels.ndim != 2 or len(labels) != len(patient_ids):
        raise ValueError(
            f"labels: shape {labels.shape} does not match {len(patient_ids)} patient ids (expected (N, labels))"
        )
    patients = len(np.unique(patient_ids))
    if not isinstance(folds, (int, np.integer)) or folds < 2 or folds > patients:
        raise ValueError(f"--folds: {folds} must be an integer from 2 to the number of patients ({patients})")

    inverse, images, counts = _patient_tables(patient_ids, labels)
    rng = np.random.default_rng(seed)
    order = _visiting_order(images, counts, rng)
    tie_breaks = rng.random((patients, folds))

    # Integer bookkeeping, scaled by `folds` so a fold's demand is total - folds * assigned exactly.
    label_totals = counts.sum(axis=0)
    inverse_totals = [1.0 / total if total else 0.0 for total in label_totals.tolist()]
    label_demand = [[int(total) for total in label_totals] for _ in range(folds)]
    image_demand = [int(images.sum())] * folds
    fold_of_patient = np.empty(patients, dtype=np.int64)
    fold_range = range(folds)
    present_per_patient = [np.flatnonzero(row).tolist() for row in counts[order]]
    # Pure Python on small lists: for K ~ 5 and 0-3 labels a patient it beats per-call numpy overhead.
    for patient, present, row, ties in zip(
        order.tolist(), present_per_patient, counts[order].tolist(), tie_breaks.tolist(), strict=True
    ):
        best = max(
            fold_range,
            key=lambda f: (
                sum(label_demand[f][label] * inverse_totals[label] for label in present),
                image_demand[f],
                ties[f],
            ),
        )
        fold_of_patient[patient] = best
        demand = label_demand[best]
        for label in present:
            demand[label] -= folds * row[label]
        image_demand[best] -= folds * int(images[patient])
    return fold_of_patient[inverse]


def fold_split(patient_ids: np.ndarray, fold_of: np.ndarray, fold: int, test: np.ndarray) -> Split:
    """Train on the other folds, validate on `fold`, test on `test`; all sorted ascending.

    `fold_of` gives every sample's fold, or -1 for samples in no fold (the held-out test set):
    fold the non-test samples with `patient_wise_folds` and write the result into a full-length
    array of -1. Raises ValueError when a test sample also sits in a fold or a test patient also
    has images in the folds (that would leak the patient).
    """
    fold_of = np.asarray(fold_of)
    patient_ids = np.asarray(patient_ids)
    folds = int(fold_of.max()) + 1 if len(fold_of) else 0
    if not 0 <= fold < folds:
        raise ValueError(f"--fold: {fold} is not a fold of this split (folds 0 to {folds - 1})")
    test = np.sort(np.asarray(test, dtype=np.int64))
    if np.any(fold_of[test] >= 0):
        raise ValueError(f"test: {int(np.sum(fold_of[test] >= 0))} test samples are also in a fold (mark them -1)")
    in_folds = fold_of >= 0
    leaked = np.intersect1d(patient_ids[test], patient_ids[in_folds])
    if len(leaked):
        raise ValueError(
            f"test: {len(leaked)} test patients also have images in the folds (e.g. patient "
            f"{leaked[0].item()!r}); hold out whole patients"
        )
    validation = np.flatnonzero(fold_of == fold)
    train = np.flatnonzero(in_folds & (fold_of != fold))
    return Split(train=train, validation=validation, test=test)


def fold_balance(
    labels: np.ndarray, fold_of: np.ndarray, folds: int, patient_ids: np.ndarray | None = None
) -> dict:
    """Per fold: images, positives per label (label order) and, given `patient_ids`, patients.

    Plain JSON values, for the report. Samples marked -1 (held-out test) are not counted.
    """
    labels = np.asarray(labels)
    fold_of = np.asarray(fold_of)
    per_fold = []
    for fold in range(folds):
        members = fold_of == fold
        entry: dict = {"fold": fold, "images": int(members.sum())}
        if patient_ids is not None:
            entry["patients"] = int(len(np.unique(np.asarray(patient_ids)[members])))
        entry["positives"] = [int(count) for count in labels[members].sum(axis=0)]
        per_fold.append(entry)
    return {"folds": folds, "per_fold": per_fold}
