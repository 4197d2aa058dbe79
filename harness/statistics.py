"""Uncertainty and significance for comparing workers that predicted the same test images.

Two tools, used side by side in the report:

* a paired patient-level bootstrap: every replicate draws the test patients with replacement, all of
  a patient's images travel together, and every worker is scored on the same replicates, so a
  difference between two workers is paired replicate by replicate;
* DeLong's paired test per label, which treats images as independent (it cannot see patients).

A worker's estimate of a metric is the mean over its runs (folds x seeds) on the same test set.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence

import numpy as np
import scipy.sparse
from scipy.special import ndtr
from scipy.stats import rankdata

ALPHA = 0.05
REPLICATE_CHUNK = 256  # replicates scored together: bounds the per-label intermediates near 30 MB


# ---------------------------------------------------------------------------------------------
# Patient bootstrap
# ---------------------------------------------------------------------------------------------


def _patient_counts(patient_ids: np.ndarray, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(resamples, P) times each patient is drawn, and each image's patient index (N,)."""
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    _, patient_index = np.unique(np.asarray(patient_ids), return_inverse=True)
    patients = int(patient_index.max()) + 1 if patient_index.size else 0
    if patients == 0:
        raise ValueError("patient_ids is empty: there is nothing to resample")
    rng = np.random.default_rng(seed)
    counts = np.empty((resamples, patients), dtype=np.int32)
    for replicate in counts:  # one replicate at a time: no (B, P) int64 draws held at once
        replicate[:] = np.bincount(rng.integers(0, patients, size=patients), minlength=patients)
    return counts, patient_index.reshape(-1)


def patient_bootstrap_weights(patient_ids: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """(resamples, N) float32 image weights: each replicate draws P patients with replacement
    (P = number of distinct patients) and every image of a patient drawn k times gets weight k."""
    counts, patient_index = _patient_counts(patient_ids, resamples, seed)
    return counts.astype(np.float32)[:, patient_index]


# ---------------------------------------------------------------------------------------------
# Weighted AUROC / AUPRC for many replicates at once
# ---------------------------------------------------------------------------------------------


def _block_rows(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Which rows of the block-weight matrix each image adds its weight to, after one sort.

    Sorted by descending score, the tie groups that hold a positive are numbered t = 0 .. T-1.
    Rows 2t and 2t+1 receive the positive weight of group t and the negative weight from just after
    group t-1 through group t (so a running sum over t gives true and false positives at each
    positive threshold; groups without positives only matter through that total); row 2T + t
    receives the negative weight tied with group t, and row 3T the negatives below every positive.
    Returns (image, row) pairs as two index arrays and T.
    """
    order = np.argsort(scores, kind="stable")[::-1]
    sorted_scores, sorted_positive = scores[order], positive[order]
    group = np.cumsum(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]]) - 1
    group_has_positive = np.zeros(int(group[-1]) + 1, dtype=bool)
    group_has_positive[group[sorted_positive]] = True
    # For a positive group its number t; for a negative-only group, the number of the next one below.
    t = (np.cumsum(group_has_positive) - group_has_positive)[group]
    groups_with_positives = int(group_has_positive.sum())
    rows = np.where(sorted_positive, 2 * t, 2 * t + 1)
    rows[~sorted_positive & (t == groups_with_positives)] = 3 * groups_with_positives
    tied = ~sorted_positive & group_has_positive[group]
    images = np.concatenate([order, order[tied]])
    rows = np.concatenate([rows, 2 * groups_with_positives + t[tied]])
    return images, rows, groups_with_positives


def _replicate_metrics(
    scores: np.ndarray, positive: np.ndarray, unit_weights_t: np.ndarray, unit_of_image: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and AP of one label for every replicate, image weights given as unit_weights_t[unit, b].

    Weights are factored (image i weighs unit_weights_t[unit_of_image[i]]) so the bootstrap never
    builds the (B, N) matrix: a sparse (rows x units) matrix of image counts times the (units, B)
    weights gives every row of _block_rows in every replicate in one product.
    """
    positive = np.asarray(positive, dtype=bool)
    replicates = unit_weights_t.shape[1]
    if positive.all() or not positive.any():  # no replicate can hold both classes
        return np.full(replicates, np.nan), np.full(replicates, np.nan)
    images, rows, groups = _block_rows(scores, positive)
    indicator = scipy.sparse.csr_matrix(
        (np.ones(len(rows), unit_weights_t.dtype), (rows, unit_of_image[images])),
        shape=(3 * groups + 1, unit_weights_t.shape[0]),
    )
    auroc, auprc = np.empty(replicates), np.empty(replicates)
    # Replicates in chunks keep the (3T + 1, chunk) float64 intermediates small (T up to N).
    for start in range(0, replicates, REPLICATE_CHUNK):
        chunk = slice(start, start + REPLICATE_CHUNK)
        weight = np.asarray(indicator @ unit_weights_t[:, chunk], dtype=np.float64)
        auroc[chunk], auprc[chunk] = _metrics_from_block_weights(weight, groups)
    return auroc, auprc


def _metrics_from_block_weights(weight: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and AP per replicate (column) from the (3T + 1, B) rows of _block_rows; `weight` is
    overwritten."""
    replicates = weight.shape[1]
    positives = weight[0 : 2 * groups : 2].copy()
    tied_negatives = weight[2 * groups : 3 * groups]
    running = weight[: 2 * groups].reshape(groups, 2, replicates)
    # Running sums over t, row by row: numpy's cumsum along axis 0 is several times slower here.
    for k in range(1, groups):
        running[k] += running[k - 1]
    true_positives, false_positives = running[:, 0], running[:, 1]
    positive_total = true_positives[-1]
    negative_total = false_positives[-1] + weight[3 * groups]
    with np.errstate(divide="ignore", invalid="ignore"):
        # Per positive group: negative weight strictly below it, plus half the negatives tied with it.
        below = 0.5 * tied_negatives - false_positives
        below += negative_total
        auroc = np.einsum("tb,tb->b", positives, below) / (positive_total * negative_total)
        called = true_positives + false_positives
        precision = np.divide(true_positives, called, out=np.zeros_like(called), where=called > 0)
        auprc = np.einsum("tb,tb->b", positives, precision) / positive_total
    unscorable = (positive_total <= 0) | (negative_total <= 0)
    auroc[unscorable] = np.nan
    auprc[unscorable] = np.nan
    return auroc, auprc


def _as_columns(array: np.ndarray) -> np.ndarray:
    """(N,) or (N, L) as (N, L)."""
    array = np.asarray(array)
    return array.reshape(len(array), -1)


def _binary_labels(labels: np.ndarray) -> np.ndarray:
    """0/1 labels as an (N, L) bool array; anything else is refused rather than read as True."""
    labels = _as_columns(labels)
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1; found {sorted(set(np.unique(labels).tolist()) - {0, 1})[:5]}")
    return labels.astype(bool)


def weighted_auroc_auprc(
    logits: np.ndarray, labels: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(B, L) AUROC and (B, L) AUPRC (average precision, sklearn's step definition without
    interpolation, ties grouped by distinct score) for every replicate weight row (weights: (B, N)).

    Equal to sklearn's roc_auc_score / average_precision_score on the dataset where each image is
    repeated `weight` times. NaN where a replicate has no positive or no negative for a label.
    """
    logits, labels = _as_columns(logits), _binary_labels(labels)
    weights = np.atleast_2d(np.asarray(weights))
    if weights.shape[1] != len(logits) or labels.shape != logits.shape:
        raise ValueError(f"shapes disagree: logits {logits.shape}, labels {labels.shape}, weights {weights.shape}")
    if not np.isfinite(logits).all():
        raise ValueError(f"{int((~np.isfinite(logits)).sum())} logits are NaN or infinite")
    if not (np.isfinite(weights) & (weights >= 0)).all():
        raise ValueError("weights must be finite and non-negative")
    auroc = np.empty((len(weights), logits.shape[1]))
    auprc = np.empty_like(auroc)
    images = np.arange(len(logits))
    # Chunks of replicates keep the float64 transposed copy near 64 MB whatever B is.
    chunk = max(1, (64 << 20) // (8 * max(len(logits), 1)))
    for start in range(0, len(weights), chunk):
        weights_t = np.ascontiguousarray(weights[start : start + chunk].T, dtype=np.float64)
        for j in range(logits.shape[1]):
            rows = slice(start, start + weights_t.shape[1])
            auroc[rows, j], auprc[rows, j] = _replicate_metrics(logits[:, j], labels[:, j], weights_t, images)
    return auroc, auprc


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
    parts = [_structural_components(_as_columns(run)[:, j], positive) for run in runs]
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


def _delong_from_components(components_a: Components, components_b: Components) -> dict[str, np.ndarray]:
    """delong_test's result from per-label (v10, v01) pairs (None for a one-class label)."""
    rows = [
        _paired_z(*a, *b) if a is not None else (math.nan,) * 6 for a, b in zip(components_a, components_b)
    ]
    return {key: np.array([row[k] for row in rows], dtype=np.float64) for k, key in enumerate(DELONG_KEYS)}


def _worker_components(runs: list[np.ndarray], labels: np.ndarray) -> Components:
    """Per label, the run-averaged (v10, v01), or None where the label has one class only."""
    labels = _binary_labels(labels)
    for index, run in enumerate(runs):
        if _as_columns(run).shape != labels.shape:
            raise ValueError(f"run {index}: logits of shape {_as_columns(run).shape}, labels of shape {labels.shape}")
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
    return _delong_from_components(_worker_components(runs_a, labels), _worker_components(runs_b, labels))


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


def _plain(value: float) -> float | None:
    """A JSON-ready float: None for NaN or infinity."""
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
    run = _as_columns(run)
    if run.shape != shape:
        raise ValueError(f"worker {worker!r}, run {index}: logits of shape {run.shape}, labels of shape {shape}")
    if not np.isfinite(run).all():
        raise ValueError(f"worker {worker!r}, run {index}: {int((~np.isfinite(run)).sum())} logits are NaN or infinite")
    return run


def _worker_metrics(
    worker: str, runs: list[np.ndarray], labels: np.ndarray, weights_t: np.ndarray, patient_index: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(2, 1 + B, L) AUROC and AUPRC of one worker, each the mean over its runs.

    Column 0 of `weights_t` weighs every patient once (the full test set), so one sort per run and
    label serves the estimate and all its replicates.
    """
    total = np.zeros((2, weights_t.shape[1], labels.shape[1]))
    for index, run in enumerate(runs):
        run = _checked_run(run, labels.shape, worker, index)
        for j in range(labels.shape[1]):
            auroc, auprc = _replicate_metrics(run[:, j], labels[:, j], weights_t, patient_index)
            total[0, :, j] += auroc
            total[1, :, j] += auprc
    return total / len(runs)


def _label_pairs(
    logits: dict[str, list[np.ndarray]], labels: np.ndarray, label_names: Sequence[str]
) -> list[dict]:
    """DeLong per pair and label, Holm over all of them as one family."""
    components = {name: _worker_components(runs, labels) for name, runs in logits.items()}
    shown = ("auroc_a", "auroc_b", "difference", "z", "p")
    rows, p_values = [], []
    for a, b in itertools.combinations(list(logits), 2):
        result = _delong_from_components(components[a], components[b])
        for j, label in enumerate(label_names):
            rows.append({"a": a, "b": b, "label": label, **{key: _plain(result[key][j]) for key in shown}})
            p_values.append(result["p"][j])
    for row, p_holm in zip(rows, holm(p_values)):
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
    labels = _binary_labels(labels)
    names = list(logits)
    if not names or any(len(logits[name]) == 0 for name in names):
        raise ValueError("compare_workers needs at least one worker, each with at least one run")
    if len(label_names) != labels.shape[1] or len(patient_ids) != len(labels):
        raise ValueError(
            f"{len(label_names)} label names, {len(patient_ids)} patient ids, labels of shape {labels.shape}"
        )
    counts, patient_index = _patient_counts(patient_ids, resamples, seed)
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
    macro_pairs = []
    for a, b in itertools.combinations(names, 2):
        difference = macro_boot[a] - macro_boot[b]
        low, high = percentile_interval(difference, level)
        macro_pairs.append({
            "a": a, "b": b, "estimate_a": _plain(macro_full[a]), "estimate_b": _plain(macro_full[b]),
            "difference": _plain(macro_full[a] - macro_full[b]), "low": _plain(low), "high": _plain(high),
            "p": paired_bootstrap_p(difference),
        })  # fmt: skip
    for pair, p_holm in zip(macro_pairs, holm([pair["p"] for pair in macro_pairs])):
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
