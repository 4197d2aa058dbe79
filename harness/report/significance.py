"""Confidence intervals and paired tests between the workers of one run, from its saved files.

Reads every run's test logits (the same test images for every worker, fold and seed), the test
labels and the test patients, and hands them to harness.evaluation.statistics. Used by `harness benchmark`
after the last worker and by `harness report`, so both give the same significance.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.evaluation.statistics import compare_workers, paired_run_tests


def compare_run(run_dir: Path, resamples: int, seed: int) -> dict:
    """Patient-level bootstrap intervals and pairwise tests (DeLong, paired bootstrap, Holm) of a run,
    and the paired test over runs (training noise)."""
    workers = json.loads((run_dir / "metrics.json").read_text())["workers"]
    labels = np.load(run_dir / "labels" / "test.npy")
    patients = np.asarray(json.loads((run_dir / "labels" / "samples.json").read_text())["test"]["patient_ids"])
    label_names = json.loads((run_dir / "run.json").read_text())["data"]["label_names"]
    logits = {name: [np.load(run_dir / result["logits"] / "test.npy") for result in worker["runs"]]
              for name, worker in workers.items()}
    result = compare_workers(logits, labels, patients, label_names, resamples=resamples, seed=seed)
    # Runs pair up by (seed, fold) across workers: the same start and batches for both.
    result["run_pairs"] = paired_run_tests({name: [run["test"]["macro_auroc"] for run in worker["runs"]]
                                            for name, worker in workers.items()})
    if any(pair["runs"] > 1 for pair in result["run_pairs"]):
        result["notes"].append("Against training noise: run r of every worker had the same training seed and fold "
                               "(the same start and batches), so the runs' macro AUROCs are compared pairwise with a "
                               "paired t-test (3 or more runs needed), Holm-adjusted over the pairs of workers.")
    return result
