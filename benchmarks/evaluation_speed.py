"""Evaluation-speed benchmark: one `compare_workers` call at the size of the official test split.

Builds 25,596 test images (the size of test_list.txt) of patients whose images-per-patient follow
the real ChestX-ray14 histogram, with 14 labels at the real per-image prevalences that persist
within a patient (reference/chestxray14_stats.json), and 3 workers whose logits are correlated
with the labels (and with each other, through a shared per-image difficulty). Times one
`compare_workers` call: 1,000 patient-level bootstrap replicates for every worker, run and label,
and every pair's verdict on the macro AUROC and per label. Budget: 30 s on a 2-core machine per
run of each worker (`--runs`, default 3, as the default benchmark). Exits 1 when missed.

    .venv/bin/python -m benchmarks.evaluation_speed [--resamples 1000] [--workers 3] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from harness.evaluation.statistics import compare_workers

BUDGET_SECONDS = 30.0  # on a slow 2-core machine
TEST_IMAGES = 25596  # official_split_sizes["test_list.txt"]
DEFAULT_STATS = Path(__file__).resolve().parents[1] / "reference" / "chestxray14_stats.json"
PER_IMAGE = 0.6  # chance that an image of a patient with a finding shows it


def load_reference(path: Path) -> dict:
    """The reference statistics, or a clear error saying where they were looked for."""
    if not path.is_file():
        sys.exit(f"{path}: reference statistics not found; pass --stats PATH to chestxray14_stats.json")
    return json.loads(path.read_text())


def patient_sizes(histogram: dict[str, int], images: int, rng: np.random.Generator) -> np.ndarray:
    """Images per patient drawn from the histogram {images per patient: patients} until `images`
    are reached; the last patient is cut to land exactly on `images`."""
    sizes = np.array([int(k) for k in histogram])
    probabilities = np.array(list(histogram.values()), dtype=np.float64)
    drawn = rng.choice(sizes, size=images, p=probabilities / probabilities.sum())  # more than enough
    cut = int(np.searchsorted(np.cumsum(drawn), images)) + 1
    drawn = drawn[:cut]
    drawn[-1] -= int(drawn.sum()) - images
    return drawn


def synthetic_test_set(reference: dict, images: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Patient ids (N,), uint8 labels (N, 14) and the label names.

    A patient has a finding with probability prevalence / 0.6; each of their images then shows it
    with probability 0.6, so findings cluster by patient as in the real data.
    """
    rng = np.random.default_rng(seed)
    sizes = patient_sizes(reference["images_per_patient_histogram"], images, rng)
    patient_ids = np.repeat(np.arange(len(sizes)), sizes)
    prevalence = np.asarray(reference["label_count"], np.float64) / reference["images"]
    has = rng.random((len(sizes), len(prevalence))) < prevalence / PER_IMAGE
    shows = rng.random((images, len(prevalence))) < PER_IMAGE
    labels = (has[patient_ids] & shows).astype(np.uint8)
    return patient_ids, labels, list(reference["labels"])


def synthetic_logits(labels: np.ndarray, workers: int, seed: int, runs: int = 1) -> dict[str, list[np.ndarray]]:
    """`runs` runs per worker: separation 1.0, 1.1, 1.2 ... plus a shared difficulty and each run's own noise."""
    rng = np.random.default_rng(seed + 1)
    difficulty = rng.normal(size=labels.shape)
    logits: dict[str, list[np.ndarray]] = {}
    for k in range(workers):
        logits[f"worker_{k}"] = [((1.0 + 0.1 * k) * labels + 0.7 * difficulty
                                  + 0.7 * rng.normal(size=labels.shape)).astype(np.float32) for _ in range(runs)]
    return logits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=TEST_IMAGES)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3, help="runs per worker (default 3, as the default benchmark)")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stats", type=Path, default=DEFAULT_STATS)
    args = parser.parse_args(argv)

    patient_ids, labels, label_names = synthetic_test_set(load_reference(args.stats), args.images, args.seed)
    logits = synthetic_logits(labels, args.workers, args.seed, args.runs)
    print(f"test set: {len(labels):,} images, {len(np.unique(patient_ids)):,} patients, {labels.shape[1]} labels, "
          f"{args.workers} workers x {args.runs} runs, {args.resamples:,} resamples")  # fmt: skip
    print("positives: " + ", ".join(f"{name} {int(n)}" for name, n in zip(label_names, labels.sum(axis=0))))

    start = time.perf_counter()
    report = compare_workers(logits, labels, patient_ids, label_names, resamples=args.resamples, seed=args.seed)
    total_s = time.perf_counter() - start

    for name, worker in report["workers"].items():
        macro = worker["macro_auroc"]
        print(f"{name}: macro AUROC {macro['estimate']:.4f} [{macro['low']:.4f}, {macro['high']:.4f}]")
    for pair in report["comparison"]["macro"]:
        print(f"{pair['a']} - {pair['b']}: {pair['difference']:+.4f} [{pair['low']:+.4f}, {pair['high']:+.4f}], "
              f"{pair['verdict']}")  # fmt: skip
    labels_different = sum(row["verdict"] == "different" for row in report["comparison"]["labels"])
    print(f"{labels_different} of {len(report['comparison']['labels'])} pair x label verdicts 'different'")

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"compare_workers: {total_s:.2f} s in all ({total_s / args.runs:.2f} s per run of each worker)")
    print(f"peak memory of the process: {peak_mb:.0f} MB")
    passed = total_s < BUDGET_SECONDS * args.runs
    print(f"{'PASS' if passed else 'FAIL'}: {total_s:.2f} s against the {BUDGET_SECONDS * args.runs:g} s budget")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
