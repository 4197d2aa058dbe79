"""Prediction churn: how often two runs call a finding differently on the same test images.

A run calls a label present when sigmoid(logit) >= 0.5, that is logit >= 0. For two runs scored on
the same images (rows) and labels (columns):

- image-level churn is the share of images on which at least one label is called differently;
- label-level churn is the share of (image, label) cells called differently.

Between two workers, run r of one is set beside run r of the other: the same training seed and
fold, so the same starting weights and the same batches; the churns are averaged over these pairs.
Within a worker, every two of its runs on the same fold with different training seeds are set side
by side: how much a framework disagrees with itself when only the seed changes. With one seed that
is not measured (None). Together they answer: do the frameworks disagree more than a framework
disagrees with itself?
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from harness.evaluation.arrays import as_columns

DEFINITION = (
    "A label is called present when sigmoid(logit) >= 0.5 (logit >= 0). Image-level churn: the share of test images "
    "on which two runs call at least one label differently; label-level churn: the share of (image, label) cells "
    "called differently. Between two workers: run r of each (the same training seed and fold) are paired and the "
    "churn is averaged over the pairs. Within a worker: every two of its runs on the same fold with different "
    "training seeds, averaged; not measured with one training seed."
)


@dataclass(frozen=True)
class RunLogits:
    """One run's test logits, (images, labels), with the training seed and fold that identify it."""

    seed: int
    fold: int | None
    logits: np.ndarray


def calls(logits: np.ndarray) -> np.ndarray:
    """The thresholded predictions: True where sigmoid(logit) >= 0.5, i.e. logit >= 0 (NaN: not called)."""
    return as_columns(logits) >= 0


def churn(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(image-level, label-level) churn between two runs' logits of the same images and labels."""
    a, b = as_columns(a), as_columns(b)
    if a.shape != b.shape or not a.size:
        raise ValueError(f"churn: logits of shape {a.shape} and {b.shape}; both runs must score the same "
                         "non-empty set of images and labels")
    differs = calls(a) != calls(b)
    return float(differs.any(axis=1).mean()), float(differs.mean())


def _summary(pairs: Sequence[tuple[float, float]]) -> dict:
    """Mean, minimum and maximum of the image- and label-level churns of some run pairs, and their number."""
    summary: dict = {"run_pairs": len(pairs)}
    for column, level in enumerate(("image", "label")):
        values = [pair[column] for pair in pairs]
        summary[f"{level}_churn"] = float(np.mean(values)) if values else None
        summary[f"{level}_churn_min"] = float(min(values)) if values else None
        summary[f"{level}_churn_max"] = float(max(values)) if values else None
    return summary


def between_workers(a: Sequence[RunLogits], b: Sequence[RunLogits]) -> dict:
    """Churn between two workers over their runs paired by (training seed, fold); runs without a partner
    (one worker stopped early in a failed run) are left out."""
    partners = {(run.seed, run.fold): run for run in b}
    pairs = [churn(run.logits, partners[(run.seed, run.fold)].logits) for run in a if (run.seed, run.fold) in partners]
    return _summary(pairs)


def within_worker(runs: Sequence[RunLogits]) -> dict:
    """Churn of one worker with itself: every two runs on the same fold with different training seeds.

    None, with a note, when the worker has a single training seed (nothing to pair).
    """
    pairs = [churn(a.logits, b.logits) for a, b in itertools.combinations(runs, 2)
             if a.fold == b.fold and a.seed != b.seed]
    seeds = len({run.seed for run in runs})
    note = None if pairs else ("one training seed: not measured; run with several --seeds" if seeds < 2
                               else "no two runs share a fold")
    return {**_summary(pairs), "seeds": seeds, "note": note}


def prediction_churn(runs: Mapping[str, Sequence[RunLogits]]) -> dict:
    """Churn between every two workers (in the order given) and of every worker with itself, JSON-ready."""
    shapes = sorted({as_columns(run.logits).shape for worker in runs.values() for run in worker})
    if len(shapes) > 1:
        raise ValueError(f"churn: the runs' test logits differ in shape {shapes}; every run must score the same "
                         "test images and labels")
    images, labels = shapes[0] if shapes else (None, None)
    return {
        "definition": DEFINITION,
        "threshold": "logit >= 0 (probability >= 0.5), per label",
        "images": images,
        "labels": labels,
        "between": [{"workers": [a, b], **between_workers(runs[a], runs[b])}
                    for a, b in itertools.combinations(runs, 2)],
        "within": {name: within_worker(worker) for name, worker in runs.items()},
    }
