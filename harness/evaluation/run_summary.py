"""Runs into one result: every run (fold x seed) kept, their mean +- std, and pooled timings.

The summary has the shape of one run's result (`test` holds the means over runs), plus
`test_std` (sample standard deviation over all runs) and, for the headline metrics, the spread
across folds (of the seed-averaged values) and across seeds (of the fold-averaged values), so a
reader sees which kind of noise is the larger.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

HEADLINE = ("macro_auroc", "macro_auprc", "f1")


def _is_number(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def mean_std(values: Sequence) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1: the runs are a sample) of the finite values."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None, None
    return float(np.mean(finite)), (float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0)


def mean_std_tree(trees: Sequence) -> tuple:
    """Element-wise mean and std of equally shaped JSON trees; non-numeric leaves come from the first
    (lists of names are merged), and their std is None."""
    first = trees[0]
    if isinstance(first, dict):
        pairs = {key: mean_std_tree([tree[key] for tree in trees]) for key in first}
        return {k: p[0] for k, p in pairs.items()}, {k: p[1] for k, p in pairs.items()}
    if all(_is_number(value) for value in trees):
        if first is not None and all(value == first for value in trees):
            return first, 0.0  # equal in every run (image and positive counts): keep the integer
        return mean_std(trees)
    if all(isinstance(value, list) for value in trees):
        return sorted({item for value in trees for item in value}), None
    return first, None


def spread(values: Sequence) -> dict:
    """Median, minimum and maximum of repeated measurements (None-free), and how many there were."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": float(np.median(finite)), "min": float(min(finite)), "max": float(max(finite)), "n": len(finite)}


def efficiency(runs: Sequence[dict]) -> dict:
    """Timings pooled over every epoch of every run; memory peaks as the largest over runs; energy."""
    pooled = lambda key: [value for run in runs for value in run["timings"][key]]  # noqa: E731
    device = [run["memory"]["device_peak_bytes"] for run in runs if run["memory"].get("device_memory_reported")]
    return {
        "seconds_per_epoch": spread(pooled("epoch_seconds")),
        "train_images_per_second": spread(pooled("train_images_per_second")),
        "compute_images_per_second": spread(pooled("compute_images_per_second")),
        "prediction_images_per_second": spread(pooled("prediction_images_per_second")),
        "first_step_seconds": spread([run["timings"]["first_step_seconds"] for run in runs]),
        "peak_rss_bytes": max((run["memory"].get("peak_rss_bytes") or 0 for run in runs), default=None) or None,
        "device_peak_bytes": max(device) if device else None,
        **energy(runs),
    }


def energy(runs: Sequence[dict]) -> dict:
    """GPU energy pooled like the timings: joules per epoch over every epoch of every run, joules per
    image over runs; None where no run's hardware told (CPU), so the report says n/a."""
    measured = [run["energy"] for run in runs if run.get("energy")]
    if not measured:
        return {"joules_per_epoch": None, "joules_per_image": None}
    return {"joules_per_epoch": spread([joules for entry in measured for joules in entry["joules_per_epoch"]]),
            "joules_per_image": spread([entry["joules_per_image"] for entry in measured])}


def _grouped_std(runs: Sequence[dict], by: str, metric: str) -> float | None:
    """Std across the values of `by` (fold or seed) of `metric` averaged over the other factor."""
    groups: dict = {}
    for run in runs:
        groups.setdefault(run[by], []).append(run["test"][metric])
    if len(groups) < 2:
        return None
    return mean_std([mean_std(values)[0] for values in groups.values()])[1]


def combine_runs(runs: list[dict]) -> dict:
    """One worker's result over its runs (one run: the same shape, no std)."""
    first = runs[0]
    test, test_std = mean_std_tree([run["test"] for run in runs])
    result = {
        "test": test,
        "runs": runs,
        "parameters": first["parameters"],
        "numerics": first["numerics"],
        "model_size_bytes": first["model_size_bytes"],
        "efficiency": efficiency(runs),
        "batch_order_sha256": [digest for run in runs for digest in run["batch_order_sha256"]],
    }
    if len(runs) > 1:
        result["test_std"] = test_std
        result["spread"] = {
            metric: {"folds": _grouped_std(runs, "fold", metric), "seeds": _grouped_std(runs, "seed", metric)}
            for metric in HEADLINE
        }
    return result
