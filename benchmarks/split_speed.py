"""Split-speed benchmark: patient-wise stratified K-fold at the full ChestX-ray14 size.

Builds 112,120 rows of 30,805 patients whose images-per-patient follow the real histogram and whose
14 labels follow the real per-image prevalences (reference/chestxray14_stats.json, as carried by
the phantom and make_nih_tree.py), with findings that persist within a patient as they do in the
real data. Times `patient_wise_folds(folds=5)`
(median of 3 repeats) and the full pipeline: hold out 20% of patients as test with a seeded
permutation, fold the rest, build every fold's split. Target: under 5 s on a slow 2-core machine.
Exits 1 when the target is missed.

    .venv/bin/python -m benchmarks.split_speed [--folds 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from benchmarks.make_nih_tree import IMAGES_PER_PATIENT
from benchmarks.nih_tree import counts_from_histogram
from harness.data.datasets.phantom import LABELS
from harness.data.datasets.phantom_labels import REFERENCE_IMAGES, reference_prevalence
from harness.data.folds import fold_balance, fold_split, patient_wise_folds

REFERENCE_PATIENTS = 30805
TARGET_SECONDS = 5.0  # on a slow 2-core machine


def synthetic_index(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Patient ids (N,) and uint8 labels (N, 14) shaped like ChestX-ray14.

    A patient has a finding with probability prevalence / 0.6; each of their images then shows it
    with probability 0.6, so findings cluster by patient as in the real data.
    """
    rng = np.random.default_rng(seed)
    sizes = counts_from_histogram(IMAGES_PER_PATIENT, REFERENCE_PATIENTS, REFERENCE_IMAGES, seed)
    patient_ids = np.repeat(np.arange(len(sizes)), sizes)
    prevalence = reference_prevalence()
    per_image = 0.6
    has = rng.random((len(sizes), len(prevalence))) < prevalence / per_image
    labels = (has[patient_ids] & (rng.random((len(patient_ids), len(prevalence))) < per_image)).astype(np.uint8)
    return patient_ids, labels


def full_pipeline(patient_ids: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Hold out 20% of patients as test, fold the rest, build all fold splits; the fold array."""
    patients = np.unique(patient_ids)
    test_patients = np.random.default_rng(seed).permutation(patients)[: int(round(0.2 * len(patients)))]
    is_test = np.isin(patient_ids, test_patients)
    rest = np.flatnonzero(~is_test)
    fold_of = np.full(len(patient_ids), -1, dtype=np.int64)
    fold_of[rest] = patient_wise_folds(patient_ids[rest], labels[rest], folds, seed)
    test = np.flatnonzero(is_test)
    for fold in range(folds):
        fold_split(patient_ids, fold_of, fold, test)
    return fold_of


def _median_seconds(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    patient_ids, labels = synthetic_index()
    print(f"index: {len(patient_ids):,} images, {len(np.unique(patient_ids)):,} patients, {labels.shape[1]} labels")
    folds_s = _median_seconds(lambda: patient_wise_folds(patient_ids, labels, args.folds, seed=0), args.repeats)
    pipeline_s = _median_seconds(lambda: full_pipeline(patient_ids, labels, args.folds, seed=0), args.repeats)

    fold_of = patient_wise_folds(patient_ids, labels, args.folds, seed=0)
    balance = fold_balance(labels, fold_of, args.folds, patient_ids)
    print(f"{'fold':>4} {'images':>7} {'patients':>8}  " + " ".join(f"{name[:7]:>7}" for name in LABELS))
    for entry in balance["per_fold"]:
        print(f"{entry['fold']:>4} {entry['images']:>7} {entry['patients']:>8}  "
              + " ".join(f"{count:>7}" for count in entry["positives"]))

    print(f"patient_wise_folds(folds={args.folds}): {folds_s:.3f} s (median of {args.repeats})")
    print(f"full pipeline (20% test hold-out, {args.folds} folds, {args.folds} splits): {pipeline_s:.3f} s")
    worst = max(folds_s, pipeline_s)
    verdict = "meets" if worst < TARGET_SECONDS else "MISSES"
    print(f"{verdict} the {TARGET_SECONDS:g} s target")
    return 0 if worst < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
