"""The array checks every statistic of the harness applies to its inputs, defined once."""

from __future__ import annotations

import numpy as np


def as_columns(array: np.ndarray) -> np.ndarray:
    """(N,) or (N, L) as (N, L)."""
    array = np.asarray(array)
    return array.reshape(len(array), -1)


def binary_labels(labels: np.ndarray) -> np.ndarray:
    """0/1 labels as an (N, L) bool array; anything else is refused rather than read as True."""
    labels = as_columns(labels)
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1; found {sorted(set(np.unique(labels).tolist()) - {0, 1})[:5]}")
    return labels.astype(bool)
