"""Uncertainty and significance for comparing workers that predicted the same test images.

Two tools, used side by side in the report:

* a paired patient-level bootstrap: every replicate draws the test patients with replacement, all of
  a patient's images travel together, and every worker is scored on the same replicates, so a
  difference between two workers is paired replicate by replicate;
* DeLong's paired test per label, which treats images as independent (it cannot see patients).

A worker's estimate of a metric is the mean over its runs (folds x seeds) on the same test set.
The bootstrap lives in harness.evaluation.bootstrap, DeLong in harness.evaluation.delong; this module combines them.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from typing import Any, SupportsFloat

import numpy as np
from scipy.stats import t as student_t

from harness.evaluation.arrays import as_columns, binary_labels
from harness.evaluation.bootstrap import patient_counts, replicate_metrics
from harness.evaluation.delong import delong_from_components, worker_components

ALPHA = 0.05


# ---------------------------------------------------------------------------------------------
# Multiplicity, intervals, bootstrap p-values
# ---------------------------------------------------------------------------------------------


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaN inputs stay NaN
    and do not count towards the family size."""
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    adjusted = np.full(p.shape, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    family = len(order)
    scaled = p[order] * (family - np.arange(family))
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval along axis 0, ignoring NaN replicates (NaN if all are NaN)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    tail = round(50.0 * (1.0 - level), 10)  # 0.90 must give the 5th percentile, not 4.999999999999998
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: NaN is the answer
        low, high = np.nanpercentile(np.asarray(samples, dtype=np.float64), [tail, 100.0 - tail], axis=0)
    return low, high


def paired_bootstrap_p(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value that a paired difference is 0: (1 + count of replicates on the
    far side of 0) / (B + 1), doubled, capped at 1; NaN replicates ignored (NaN if none is left).

    The far side is the smaller tail; replicates exactly at 0 count in both tails (conservative).
    """
    d = np.asarray(differences, dtype=np.float64).reshape(-1)
    d = d[~np.isnan(d)]
    if d.size == 0:
        return math.nan
    far = min(int((d <= 0).sum()), int((d >= 0).sum()))
    return min(1.0, 2.0 * (1 + far) / (d.size + 1))


# ---------------------------------------------------------------------------------------------
# The comparison the report shows
# ---------------------------------------------------------------------------------------------


def _plain(value: SupportsFloat) -> float | None:
    """A JSON-ready float: None for NaN or infinity (`value`: a float, numpy scalar or 0-d array)."""
    return float(value) if math.isfinite(value) else None


def _interval(estimate: float, samples: np.ndarray, level: float) -> dict:
    """{estimate, low, high}: the full-set estimate and the percentile interval of its replicates."""
    low, high = percentile_interval(samples, level)
    return {"estimate": _plain(estimate), "low": _plain(low), "high": _plain(high)}


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaN labels (NaN where every label is NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=-1)


def _checked_run(run: np.ndarray, shape: tuple[int, int], worker: str, index: int) -> np.ndarray:
    """A run's logits as (N, L), refused with the worker and run named if misshapen or not finite."""
    run = as_columns(run)
    if run.shape != shape:
        raise ValueError(f"worker {worker!r}, run {index}: logits of shape {run.shape}, labels of shape {shape}")
    if not np.isfinite(run).all():
        raise ValueError(f"worker {worker!r}, run {index}: {int((~np.isfinite(run)).sum())} logits are NaN or infinite")
    return run


def _worker_metrics(
    worker: str, runs: list[np.ndarray], labels: np.ndarray, weights_t: np.ndarray, patient_index: np.ndarray
) -> np.ndarray:
    """(2, 1 + B, L) AUROC and AUPRC of one worker, each the mean over its runs (unpacks as the two).

    Column 0 of `weights_t` weighs every patient once (the full test set), so one sort per run and
    label serves the estimate and all its replicates.
    """
    total = np.zeros((2, weights_t.shape[1], labels.shape[1]))
    for index, run in enumerate(runs):
        run = _checked_run(run, labels.shape, worker, index)
        for j in range(labels.shape[1]):
            auroc, auprc = replicate_metrics(run[:, j], labels[:, j], weights_t, patient_index)
            total[0, :, j] += auroc
            total[1, :, j] += auprc
    return total / len(runs)


def _label_pairs(
    logits: dict[str, list[np.ndarray]], labels: np.ndarray, label_names: Sequence[str]
) -> list[dict]:
    """DeLong per pair and label, Holm over all of them as one family."""
    components = {name: worker_components(runs, labels) for name, runs in logits.items()}
    shown = ("auroc_a", "auroc_b", "difference", "z", "p")
    rows, p_values = [], []
    for a, b in itertools.combinations(list(logits), 2):
        result = delong_from_components(components[a], components[b])
        for j, label in enumerate(label_names):
            rows.append({"a": a, "b": b, "label": label, **{key: _plain(result[key][j]) for key in shown}})
            p_values.append(result["p"][j])
    for row, p_holm in zip(rows, holm(p_values), strict=True):
        row["p_holm"] = _plain(p_holm)
        row["significant"] = bool(p_holm < ALPHA)
    return rows


def compare_workers(
    logits: dict[str, list[np.ndarray]],
    labels: np.ndarray,
    patient_ids: np.ndarray,
    label_names: Sequence[str],
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Everything the report needs, as JSON-ready plain values (None for NaN), using ONE set of
    patient bootstrap replicates shared by all workers, so differences are paired.

    Keys: resamples, level, alpha, unit ("patient"), patients, images, workers (per worker: runs,
    macro_auroc, macro_auprc, auroc and auprc per label, each {estimate, low, high}),
    macro_auroc_pairs (paired bootstrap on the macro AUROC, Holm over the pairs), label_pairs
    (DeLong per label, Holm over all pairs x labels as one family) and notes. Pairs are every
    unordered pair of worker names in the given order (a before b). 'estimate' is the metric on the
    full test set (mean over runs), not the bootstrap mean.
    """
    labels = binary_labels(labels)
    names = list(logits)
    if not names or any(len(logits[name]) == 0 for name in names):
        raise ValueError("compare_workers needs at least one worker, each with at least one run")
    if len(label_names) != labels.shape[1] or len(patient_ids) != len(labels):
        raise ValueError(
            f"{len(label_names)} label names, {len(patient_ids)} patient ids, labels of shape {labels.shape}"
        )
    counts, patient_index = patient_counts(patient_ids, resamples, seed)
    # (P, 1 + B): a column of ones (the full test set), then every replicate's patient counts.
    # Integer counts are exact in float32 (sums stay far below 2**24), halving the memory traffic.
    weights_t = np.empty((counts.shape[1], resamples + 1), dtype=np.float32)
    weights_t[:, 0] = 1.0
    weights_t[:, 1:] = counts.T
    del counts
    workers, macro_boot, macro_full = {}, {}, {}
    for name in names:
        auroc, auprc = _worker_metrics(name, logits[name], labels, weights_t, patient_index)
        macro_auroc, macro_auprc = _nanmean_rows(auroc), _nanmean_rows(auprc)
        macro_full[name], macro_boot[name] = macro_auroc[0], macro_auroc[1:]
        workers[name] = {
            "runs": len(logits[name]),
            "macro_auroc": _interval(macro_auroc[0], macro_auroc[1:], level),
            "macro_auprc": _interval(macro_auprc[0], macro_auprc[1:], level),
            "auroc": {lab: _interval(auroc[0, j], auroc[1:, j], level) for j, lab in enumerate(label_names)},
            "auprc": {lab: _interval(auprc[0, j], auprc[1:, j], level) for j, lab in enumerate(label_names)},
        }
    macro_pairs: list[dict[str, Any]] = []
    for a, b in itertools.combinations(names, 2):
        difference = macro_boot[a] - macro_boot[b]
        low, high = percentile_interval(difference, level)
        macro_pairs.append({
            "a": a, "b": b, "estimate_a": _plain(macro_full[a]), "estimate_b": _plain(macro_full[b]),
            "difference": _plain(macro_full[a] - macro_full[b]), "low": _plain(low), "high": _plain(high),
            "p": paired_bootstrap_p(difference),
        })  # fmt: skip
    for pair, p_holm in zip(macro_pairs, holm([pair["p"] for pair in macro_pairs]), strict=True):
        pair["p"], pair["p_holm"] = _plain(pair["p"]), _plain(p_holm)
        pair["significant"] = bool(p_holm < ALPHA)
    return {
        "resamples": int(resamples),
        "level": float(level),
        "alpha": ALPHA,
        "unit": "patient",
        "patients": int(patient_index.max()) + 1,
        "images": int(len(labels)),
        "workers": workers,
        "macro_auroc_pairs": macro_pairs,
        "label_pairs": _label_pairs(logits, labels, label_names),
        "notes": _notes(resamples, level, len(names), len(label_names)),
    }


def _notes(resamples: int, level: float, workers: int, labels: int) -> list[str]:
    """Plain-English sentences for the report: what was resampled, which test, which families."""
    pairs = workers * (workers - 1) // 2
    return [
        f"Intervals are {level:.0%} percentile intervals from {resamples} bootstrap replicates that resample "
        "patients with replacement; all images of a drawn patient are kept together, and every worker is "
        "scored on the same replicates, so differences between workers are paired.",
        "Each estimate is the metric on the full test set, averaged over the worker's runs (folds x seeds); "
        "macro figures average the labels that can be scored.",
        "The macro AUROC comparisons use the paired patient bootstrap; their p-values are Holm-adjusted "
        f"over the {pairs} pair(s) of workers.",
        "The per-label comparisons use DeLong's paired test, which treats images as independent and so "
        "ignores that one patient contributes several images (it can overstate significance); their "
        f"p-values are Holm-adjusted over all {pairs} pair(s) x {labels} labels as one family.",
        f"A difference is called significant when its Holm-adjusted p-value is below {ALPHA}.",
    ]


def paired_run_tests(run_values: dict[str, list[float]]) -> list[dict]:
    """Is a difference larger than run-to-run noise? A paired t-test per pair of workers over their runs.

    Run r of every worker used the same training seed and fold (the same starting weights and
    batches), so run r of one worker pairs with run r of another. The bootstrap and DeLong see only
    the test set's sampling noise; this sees training noise. p is None with fewer than 3 runs, or
    when the differences do not vary. Holm over the pairs.
    """
    pairs: list[dict[str, Any]] = []
    for a, b in itertools.combinations(list(run_values), 2):
        differences = np.asarray(run_values[a], dtype=np.float64) - np.asarray(run_values[b], dtype=np.float64)
        differences = differences[np.isfinite(differences)]
        runs, mean = len(differences), float(differences.mean()) if len(differences) else math.nan
        sd = float(differences.std(ddof=1)) if runs > 1 else math.nan
        t = mean / (sd / math.sqrt(runs)) if runs >= 3 and sd > 0 else math.nan
        p = float(2 * student_t.sf(abs(t), runs - 1)) if math.isfinite(t) else math.nan
        pairs.append({"a": a, "b": b, "runs": runs, "difference": _plain(mean), "sd": _plain(sd),
                      "t": _plain(t), "p": p})
    for pair, p_holm in zip(pairs, holm([pair["p"] for pair in pairs]), strict=True):
        pair["p"], pair["p_holm"] = _plain(pair["p"]), _plain(p_holm)
        pair["significant"] = bool(p_holm < ALPHA)
    return pairs
