"""Confidence intervals and the verdict on every pair of workers of one run, from its saved files.

Reads every run's test logits (the same test images for every worker, fold and seed), the test
labels and the test patients, and hands them to harness.evaluation.statistics. Used by `harness benchmark`
after the last worker and by `harness report`, so both give the same significance.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.evaluation.comparison import DEFAULT_MARGIN
from harness.evaluation.statistics import RunKey, compare_workers


def fold_ratio(data: dict) -> float:
    """n_validation / n_train of a fold, averaged over the folds (0 without cross-validation): the
    Nadeau-Bengio correction for the overlap of the folds' training sets."""
    folds = data.get("folds") or []
    if len(folds) < 2:
        return 0.0
    return float(np.mean([fold["validation"]["images"] / fold["train"]["images"] for fold in folds]))


def _paired_runs(workers: dict) -> list[RunKey]:
    """The (seed, fold) runs that every worker completed, in the first worker's order (an interrupted
    run may leave the last worker with fewer)."""
    keys = [[(run["seed"], run.get("fold")) for run in worker["runs"]] for worker in workers.values()]
    return [key for key in keys[0] if all(key in other for other in keys[1:])]


def compare_run(run_dir: Path, resamples: int, seed: int) -> dict:
    """Patient-level bootstrap intervals per worker, and every pair's verdict against training and
    test-set noise (runs paired by seed and fold; the margin is the run's --equivalence-margin)."""
    workers = json.loads((run_dir / "metrics.json").read_text())["workers"]
    run = json.loads((run_dir / "run.json").read_text())
    labels = np.load(run_dir / "labels" / "test.npy")
    patients = np.asarray(json.loads((run_dir / "labels" / "samples.json").read_text())["test"]["patient_ids"])
    paired = _paired_runs(workers)
    logits = {name: [np.load(run_dir / result["logits"] / "test.npy") for result in worker["runs"]
                     if (result["seed"], result.get("fold")) in paired]
              for name, worker in workers.items()}
    return compare_workers(logits, labels, patients, run["data"]["label_names"], resamples=resamples, seed=seed,
                           run_keys=paired, fold_ratio=fold_ratio(run["data"]),
                           margin=run["config"].get("equivalence_margin", DEFAULT_MARGIN))
