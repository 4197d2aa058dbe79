"""Uncertainty for comparing workers that predicted the same test images, run by run.

* a paired patient-level bootstrap: every replicate draws the test patients with replacement, all of
  a patient's images travel together, and every worker and run is scored on the same replicates, so
  a difference between two workers is paired replicate by replicate (the test set's sampling noise);
* the runs: run r of every worker shares a training seed and fold, so each pair of workers gives one
  difference per run, whose spread is the training noise.

harness.evaluation.comparison combines the two into each pair's verdict; the bootstrap lives in
harness.evaluation.bootstrap.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence

import numpy as np

from harness.evaluation.arrays import as_columns, binary_labels
from harness.evaluation.bootstrap import patient_counts, replicate_metrics
from harness.evaluation.comparison import ALPHA, DEFAULT_MARGIN, decide, pair_statistics, plain

RunKey = tuple[int, int | None]  # (training seed, fold or None): how runs pair across workers


# ---------------------------------------------------------------------------------------------
# Intervals
# ---------------------------------------------------------------------------------------------


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval along axis 0, ignoring NaN replicates (NaN if all are NaN)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    tail = round(50.0 * (1.0 - level), 10)  # 0.90 must give the 5th percentile, not 4.999999999999998
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: NaN is the answer
        low, high = np.nanpercentile(np.asarray(samples, dtype=np.float64), [tail, 100.0 - tail], axis=0)
    return low, high


# ---------------------------------------------------------------------------------------------
# The comparison the report shows
# ---------------------------------------------------------------------------------------------


def _interval(estimate: float, samples: np.ndarray, level: float) -> dict:
    """{estimate, low, high}: the full-set estimate and the percentile interval of its replicates."""
    low, high = percentile_interval(samples, level)
    return {"estimate": plain(estimate), "low": plain(low), "high": plain(high)}


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
    """(J, 2, 1 + B, L): every run's AUROC and AUPRC per label, on the full test set (column 0) and
    on every bootstrap replicate.

    Column 0 of `weights_t` weighs every patient once (the full test set), so one sort per run and
    label serves the estimate and all its replicates.
    """
    scores = np.empty((len(runs), 2, weights_t.shape[1], labels.shape[1]))
    for index, run in enumerate(runs):
        run = _checked_run(run, labels.shape, worker, index)
        for j in range(labels.shape[1]):
            scores[index, :, :, j] = replicate_metrics(run[:, j], labels[:, j], weights_t, patient_index)
    return scores


def _shared_test_variance(replicate_differences: np.ndarray) -> float:
    """The test set's share of the variance of a mean difference over runs, from (J, B) bootstrap
    replicates of each run's difference: the mean covariance between different runs (>= 0).

    All runs are scored on one test set, so part of its sampling error is common to every run and
    does not average away; the part that differs between runs already shows in the runs' spread.
    With one run nothing separates the two: the whole variance is returned.
    """
    finite = replicate_differences[:, np.isfinite(replicate_differences).all(axis=0)]
    runs = finite.shape[0]
    if finite.shape[1] < 2:
        return math.nan
    covariance = np.atleast_2d(np.cov(finite))
    if runs == 1:
        return float(covariance[0, 0])
    off_diagonal = (covariance.sum() - np.trace(covariance)) / (runs * (runs - 1))
    return max(float(off_diagonal), 0.0)


def _run_summary(keys: Sequence[RunKey], values: np.ndarray) -> dict:
    """A worker's runs (seed, fold, macro AUROC) and their mean, sd (None with one run), min and max."""
    finite = values[np.isfinite(values)]
    return {
        "runs": [{"seed": seed, "fold": fold, "macro_auroc": plain(value)}
                 for (seed, fold), value in zip(keys, values, strict=True)],
        "mean": plain(finite.mean()) if len(finite) else None,
        "sd": plain(finite.std(ddof=1)) if len(finite) > 1 else None,
        "min": plain(finite.min()) if len(finite) else None,
        "max": plain(finite.max()) if len(finite) else None,
    }


def _pair_stats(names: list[str], scores: dict[str, np.ndarray], fold_ratio: float, level: float,
                margin: float) -> tuple[list[dict], list[float]]:
    """Every pair of workers on one metric, before multiplicity, from each worker's (J, 1 + B) scores
    (run by run; column 0 the full test set, then the bootstrap replicates); and each pair's shared
    test-set variance."""
    stats, variances = [], []
    for a, b in itertools.combinations(names, 2):
        differences = scores[a] - scores[b]
        test_variance = _shared_test_variance(differences[:, 1:])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a label no run could score: NaN is the answer
            test_low, test_high = percentile_interval(np.nanmean(differences[:, 1:], axis=0), level)
            mean_a, mean_b = float(np.nanmean(scores[a][:, 0])), float(np.nanmean(scores[b][:, 0]))
        stats.append({"a": a, "b": b, "mean_a": mean_a, "mean_b": mean_b,
                      **pair_statistics(differences[:, 0], test_variance, fold_ratio, level, margin),
                      "test_low": float(test_low), "test_high": float(test_high),
                      "differences": [plain(value) for value in differences[:, 0]]})
        variances.append(test_variance)
    return stats, variances


def compare_workers(
    logits: dict[str, list[np.ndarray]],
    labels: np.ndarray,
    patient_ids: np.ndarray,
    label_names: Sequence[str],
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    run_keys: Sequence[RunKey] | None = None,
    fold_ratio: float = 0.0,
    margin: float = DEFAULT_MARGIN,
) -> dict:
    """Everything the report needs, as JSON-ready plain values (None for NaN), using ONE set of
    patient bootstrap replicates shared by all workers and runs, so differences are paired.

    `logits[name]` holds the worker's runs in run order: run r of every worker shares a training
    seed and fold, `run_keys[r]` = (seed, fold or None) (default: seed r, no fold). `fold_ratio` is
    n_validation / n_train of a fold when the runs are folds of a cross-validation (0 otherwise).

    Keys: resamples, level, alpha, unit ("patient"), patients, images, workers (per worker: runs,
    macro_auroc, macro_auprc, auroc and auprc per label, each {estimate, low, high}: the test set's
    sampling noise only), comparison (see harness.evaluation.comparison: the per-run spread of each
    worker, and each pair's verdict on the macro AUROC and per label against training and test-set
    noise together) and notes. Pairs are every unordered pair of worker names in the given order.
    """
    labels = binary_labels(labels)
    names = list(logits)
    if not names or any(len(logits[name]) == 0 for name in names):
        raise ValueError("compare_workers needs at least one worker, each with at least one run")
    if len(label_names) != labels.shape[1] or len(patient_ids) != len(labels):
        raise ValueError(
            f"{len(label_names)} label names, {len(patient_ids)} patient ids, labels of shape {labels.shape}"
        )
    runs = {len(logits[name]) for name in names}
    if len(runs) != 1:
        listed = ", ".join(f"{name}: {len(logits[name])}" for name in names)
        raise ValueError(f"workers have different numbers of runs ({listed}): runs must pair up by seed and fold")
    keys = list(run_keys) if run_keys is not None else [(r, None) for r in range(runs.pop())]
    if len(keys) != len(logits[names[0]]):
        raise ValueError(f"{len(keys)} run keys for {len(logits[names[0]])} runs")
    counts, patient_index = patient_counts(patient_ids, resamples, seed)
    # (P, 1 + B): a column of ones (the full test set), then every replicate's patient counts.
    # Integer counts are exact in float32 (sums stay far below 2**24), halving the memory traffic.
    weights_t = np.empty((counts.shape[1], resamples + 1), dtype=np.float32)
    weights_t[:, 0] = 1.0
    weights_t[:, 1:] = counts.T
    del counts
    workers, macro_scores, label_scores = {}, {}, {}
    for name in names:
        scores = _worker_metrics(name, logits[name], labels, weights_t, patient_index)
        auroc, auprc = scores.mean(axis=0)  # the worker's estimate: the mean over its runs
        macro_auroc, macro_auprc = _nanmean_rows(auroc), _nanmean_rows(auprc)
        macro_scores[name], label_scores[name] = _nanmean_rows(scores[:, 0]), scores[:, 0]
        workers[name] = {
            "runs": len(logits[name]),
            "macro_auroc": _interval(macro_auroc[0], macro_auroc[1:], level),
            "macro_auprc": _interval(macro_auprc[0], macro_auprc[1:], level),
            "auroc": {lab: _interval(auroc[0, j], auroc[1:, j], level) for j, lab in enumerate(label_names)},
            "auprc": {lab: _interval(auprc[0, j], auprc[1:, j], level) for j, lab in enumerate(label_names)},
        }
    macro_stats, macro_variances = _pair_stats(names, macro_scores, fold_ratio, level, margin)
    label_stats: list[dict] = []
    label_variances: list[float] = []
    for j, label in enumerate(label_names):  # one family over pairs x labels: Holm sees them all at once
        stats, variances = _pair_stats(names, {n: label_scores[n][..., j] for n in names}, fold_ratio, level, margin)
        label_stats += [{"label": label, **row} for row in stats]
        label_variances += variances
    comparison = {
        "alpha": ALPHA, "level": float(level), "margin": float(margin),
        "fold_correction": {"folds": len({fold for _, fold in keys if fold is not None}) or 1,
                            "ratio": plain(fold_ratio) if fold_ratio else None},
        "workers": {name: _run_summary(keys, macro_scores[name][:, 0]) for name in names},
        "macro": decide(macro_stats, macro_variances, fold_ratio, level, margin),
        "labels": decide(label_stats, label_variances, fold_ratio, level, margin),
        "notes": comparison_notes(resamples, level, margin, fold_ratio, len(keys), len(names), len(label_names)),
    }
    return {
        "resamples": int(resamples),
        "level": float(level),
        "alpha": ALPHA,
        "unit": "patient",
        "patients": int(patient_index.max()) + 1,
        "images": int(len(labels)),
        "workers": workers,
        "comparison": comparison,
        "notes": _notes(resamples, level),
    }


def _notes(resamples: int, level: float) -> list[str]:
    """What the per-worker intervals are."""
    return [
        f"Per-worker intervals are {level:.0%} percentile intervals from {resamples} bootstrap replicates that "
        "resample the test set's patients with replacement (all images of a drawn patient kept together): they show "
        "the test set's sampling noise only, not training noise.",
        "Each estimate is the metric on the full test set, averaged over the worker's runs (folds x seeds); macro "
        "figures average the labels that can be scored.",
    ]


def comparison_notes(resamples: int, level: float, margin: float, fold_ratio: float, runs: int, workers: int,
                     labels: int) -> list[str]:
    """Plain-English sentences for the report: the method behind every pair's verdict."""
    pairs = workers * (workers - 1) // 2
    correction = (f" With folds, training sets overlap, so 1/runs is replaced by 1/runs + {fold_ratio:.3f} "
                  "(held-out / training images; the corrected resampled t-test of Nadeau & Bengio 2003, "
                  "Bouckaert & Frank 2004)." if fold_ratio else "")
    return [
        f"The unit of replication is the training run: run r of every worker had the same seed and fold (same "
        f"starting weights, batches and augmentation), so runs pair across workers ({runs} per worker here).",
        "A pair's uncertainty adds the two noises: the spread of its per-run differences (training noise), divided "
        f"by the number of runs, and the part of the test set's sampling noise that every run shares (the mean "
        f"covariance between runs over {resamples} patient-bootstrap replicates of the one test set; more runs do "
        f"not average it away).{correction} "
        f"The {level:.0%} interval uses Student's t with runs - 1 degrees of freedom (exact for the training "
        "noise, conservative for the test set's share).",
        f"Verdicts: *different* when the two-sided test of no difference rejects at {ALPHA} after Holm's "
        f"correction; *equivalent* when two one-sided tests put the {level:.0%} interval inside ±{margin:g} "
        "(--equivalence-margin; Holm-corrected too); otherwise *undetermined*. With one run per worker training "
        "noise cannot be measured and every verdict is undetermined.",
        f"Holm's correction runs over the {pairs} pair(s) of workers for the macro AUROC, and over all {pairs} "
        f"pair(s) x {labels} labels as one family for the per-label verdicts.",
        "Not shown: noise from other data (another hospital, another split), or from settings not varied here; "
        "a verdict holds for this dataset, architecture and recipe.",
    ]
