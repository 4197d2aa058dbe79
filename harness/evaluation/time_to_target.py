"""Time to target: the epochs and seconds each run needs to first reach one validation AUROC target.

Like MLPerf's and DAWNBench's time-to-accuracy, but with a target the study sets itself, so every
worker can reach it: 95% of the lowest worker's best validation macro AUROC, where a worker's best
is the mean over its runs of each run's highest validation macro AUROC over its epochs. One target
for the whole study, so the workers race to the same line.

A run reaches the target at the first epoch whose validation macro AUROC is at or above it; its
time is the sum of the per-epoch training seconds up to and including that epoch. A run that never
reaches it counts as not reached (None), and each worker says how many of its runs did.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from harness.evaluation.run_summary import spread

FRACTION = 0.95


@dataclass(frozen=True)
class RunCurve:
    """One run's epochs in order (epoch 1 first): validation macro AUROC and training seconds of each."""

    seed: int
    fold: int | None
    validation_macro_auroc: Sequence[float]
    seconds: Sequence[float]

    def __post_init__(self) -> None:
        if len(self.validation_macro_auroc) != len(self.seconds):
            raise ValueError(f"run (seed {self.seed}, fold {self.fold}): {len(self.validation_macro_auroc)} "
                             f"validation AUROCs but {len(self.seconds)} epoch times; one of each per epoch")


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def run_best(curve: RunCurve) -> float | None:
    """The run's highest validation macro AUROC over its epochs (None if no epoch could be scored)."""
    finite = _finite(curve.validation_macro_auroc)
    return max(finite) if finite else None


def worker_best(curves: Sequence[RunCurve]) -> float | None:
    """A worker's best: the mean over its runs of each run's highest validation macro AUROC."""
    bests = _finite([run_best(curve) for curve in curves])
    return float(np.mean(bests)) if bests else None


def study_target(bests: Mapping[str, float | None], fraction: float = FRACTION) -> tuple[float | None, str | None]:
    """(target, the worker it came from): `fraction` of the lowest worker's best (None if none has one)."""
    scored = {name: best for name, best in bests.items() if best is not None}
    if not scored:
        return None, None
    lowest = min(scored, key=lambda name: scored[name])
    return fraction * scored[lowest], lowest


def first_reach(curve: RunCurve, target: float | None) -> tuple[int | None, float | None]:
    """(epoch, cumulative training seconds up to and including it) where the run first reaches
    `target`, epochs counted from 1; (None, None) if it never does."""
    if target is None:
        return None, None
    elapsed = 0.0
    for epoch, (auroc, seconds) in enumerate(zip(curve.validation_macro_auroc, curve.seconds, strict=True), start=1):
        elapsed += float(seconds)
        if auroc is not None and math.isfinite(auroc) and auroc >= target:
            return epoch, elapsed
    return None, None


def time_to_target(curves: Mapping[str, Sequence[RunCurve]], fraction: float = FRACTION) -> dict:
    """Every run's epochs and seconds to the study's target, and per worker their median and range over
    the runs that reached it, JSON-ready."""
    bests = {name: worker_best(runs) for name, runs in curves.items()}
    target, lowest = study_target(bests, fraction)
    workers = {}
    for name, runs in curves.items():
        per_run = []
        for curve in runs:
            epoch, seconds = first_reach(curve, target)
            per_run.append({"seed": curve.seed, "fold": curve.fold, "epoch": epoch, "seconds": seconds})
        reached = [run for run in per_run if run["epoch"] is not None]
        workers[name] = {
            "reached": len(reached),
            "runs": len(per_run),
            "epochs": spread([run["epoch"] for run in reached]),
            "seconds": spread([run["seconds"] for run in reached]),
            "per_run": per_run,
        }
    return {
        "target": target,
        "fraction": fraction,
        "lowest_worker": lowest,
        "rule": (f"{fraction:.0%} of the lowest worker's best validation macro AUROC; a worker's best is the "
                 "mean over its runs of each run's highest validation macro AUROC over epochs. One target for "
                 "every worker."),
        "seconds_counted": ("training seconds of each epoch (streaming its batches; the validation pass is not "
                            "counted), summed up to and including the first epoch at or above the target"),
        "best_validation_macro_auroc": bests,
        "workers": workers,
    }
