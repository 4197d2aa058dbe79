"""Holm's step-down correction for a family of tests (Holm 1979)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1) along the last axis, each
    row its own family; NaN inputs stay NaN and do not count towards the family size."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        return np.apply_along_axis(holm, -1, p) if p.size else p.copy()
    adjusted = np.full(p.shape, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    family = len(order)
    scaled = p[order] * (family - np.arange(family))
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted
