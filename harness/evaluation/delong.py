"""DeLong's paired test of two workers' AUROCs on the same images, per label.

Computed with the fast midrank algorithm of Sun & Xu (2014). It treats images as independent (it
cannot see patients); the report says so beside the patient bootstrap's results.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtr
from scipy.stats import rankdata

from harness.evaluation.arrays import as_columns, binary_labels

# ---------------------------------------------------------------------------------------------
# DeLong's paired test
# ---------------------------------------------------------------------------------------------


def _structural_components(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's placement values by midranks (Sun & Xu 2014): V10 per positive, V01 per negative.

    V10_i = share of negatives below positive i (ties one half); V01_j = share of positives above
    negative j. Their means are the AUROC.
    """
    x, y = scores[positive], scores[~positive]
    m, n = len(x), len(y)
    combined = rankdata(np.concatenate([x, y]))  # midranks
    v10 = (combined[:m] - rankdata(x)) / n
    v01 = 1.0 - (combined[m:] - rankdata(y)) / m
    return v10, v01


def _mean_components(runs: list[np.ndarray], positive: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Run-averaged components of label j: the mean AUROC is a linear combination of U-statistics."""
    parts = [_structural_components(as_columns(run)[:, j], positive) for run in runs]
    return np.mean([p[0] for p in parts], axis=0), np.mean([p[1] for p in parts], axis=0)


def _paired_z(
    v10_a: np.ndarray, v01_a: np.ndarray, v10_b: np.ndarray, v01_b: np.ndarray
) -> tuple[float, float, float, float, float, float]:
    """AUROC a, AUROC b, difference, standard error, z, two-sided p from the components."""
    v10, v01 = v10_a - v10_b, v01_a - v01_b
    difference = float(v10.mean())
    if len(v10) < 2 or len(v01) < 2:  # a variance needs two of each class
        return float(v10_a.mean()), float(v10_b.mean()), difference, math.nan, math.nan, math.nan
    se = math.sqrt(np.var(v10, ddof=1) / len(v10) + np.var(v01, ddof=1) / len(v01))
    if se == 0.0:  # identical rankings: no difference and no evidence of one
        z = 0.0 if difference == 0.0 else math.copysign(math.inf, difference)
    else:
        z = difference / se
    return float(v10_a.mean()), float(v10_b.mean()), difference, se, z, float(2.0 * ndtr(-abs(z)))


Components = list[tuple[np.ndarray, np.ndarray] | None]
DELONG_KEYS = ("auroc_a", "auroc_b", "difference", "standard_error", "z", "p")


def delong_from_components(components_a: Components, components_b: Components) -> dict[str, np.ndarray]:
    """delong_test's result from per-label (v10, v01) pairs (None for a one-class label)."""
    # From the same labels a and b are None together; mypy cannot know, so both are tested.
    rows = [
        _paired_z(*a, *b) if a is not None and b is not None else (math.nan,) * 6
        for a, b in zip(components_a, components_b, strict=True)
    ]
    return {key: np.array([row[k] for row in rows], dtype=np.float64) for k, key in enumerate(DELONG_KEYS)}


def worker_components(runs: list[np.ndarray], labels: np.ndarray) -> Components:
    """Per label, the run-averaged (v10, v01), or None where the label has one class only."""
    labels = binary_labels(labels)
    for index, run in enumerate(runs):
        if as_columns(run).shape != labels.shape:
            raise ValueError(f"run {index}: logits of shape {as_columns(run).shape}, labels of shape {labels.shape}")
    out = []
    for j in range(labels.shape[1]):
        positives = int(labels[:, j].sum())
        out.append(_mean_components(runs, labels[:, j], j) if 0 < positives < len(labels) else None)
    return out


def delong_test(runs_a: list[np.ndarray], runs_b: list[np.ndarray], labels: np.ndarray) -> dict[str, np.ndarray]:
    """Paired DeLong test per label for the difference of the run-averaged AUROCs of two workers
    on the same images.

    With one run each it is DeLong, DeLong & Clarke-Pearson (1988), computed with the fast midrank
    algorithm of Sun & Xu (2014). With several runs, the AUC difference mean_r A_a,r - mean_r A_b,r
    is a linear combination of U-statistics on the same samples, so its structural components are
    the same linear combination of the per-run components (V10 over positives, V01 over negatives);
    variance = var(V10_D)/m + var(V01_D)/n (ddof=1). Returns arrays of length L: auroc_a, auroc_b,
    difference, standard_error, z, p (two-sided normal). NaN for labels with one class only.

    With one run each, var(V10_D)/m + var(V01_D)/n is exactly DeLong's var_a + var_b - 2 cov_ab.
    Identical rankings give standard error 0; the test then reports z = 0 and p = 1.
    """
    if not runs_a or not runs_b:
        raise ValueError("delong_test needs at least one run per worker")
    return delong_from_components(worker_components(runs_a, labels), worker_components(runs_b, labels))
