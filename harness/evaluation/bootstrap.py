"""The patient-level bootstrap: replicate weights, and AUROC / AUPRC for many replicates at once.

Every replicate draws the test patients with replacement; all of a patient's images travel
together. Scoring 1,000 replicates never builds the (replicates x images) weight matrix: see
replicate_metrics.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from harness.evaluation.arrays import as_columns, binary_labels

REPLICATE_CHUNK = 256  # replicates scored together: bounds the per-label intermediates near 30 MB


# ---------------------------------------------------------------------------------------------
# Patient bootstrap
# ---------------------------------------------------------------------------------------------


def patient_counts(patient_ids: np.ndarray, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
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
    counts, patient_index = patient_counts(patient_ids, resamples, seed)
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


def replicate_metrics(
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


def weighted_auroc_auprc(
    logits: np.ndarray, labels: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(B, L) AUROC and (B, L) AUPRC (average precision, sklearn's step definition without
    interpolation, ties grouped by distinct score) for every replicate weight row (weights: (B, N)).

    Equal to sklearn's roc_auc_score / average_precision_score on the dataset where each image is
    repeated `weight` times. NaN where a replicate has no positive or no negative for a label.
    """
    logits, labels = as_columns(logits), binary_labels(labels)
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
            auroc[rows, j], auprc[rows, j] = replicate_metrics(logits[:, j], labels[:, j], weights_t, images)
    return auroc, auprc
