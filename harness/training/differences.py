"""How far two results of the parity probe are apart: the one definition every parity row uses.

Relative differences are scaled by the larger magnitude of the two sides: for arrays (logits,
feature maps, CAMs), max|a - b| / max(max|a|, max|b|); for a scalar (a loss), |a - b| / max(|a|, |b|).
"""

from __future__ import annotations

import numpy as np

_TINY = 1e-30


def relative(x: float, y: float) -> float:
    """|x - y| scaled by the larger of |x| and |y|."""
    return abs(x - y) / max(abs(x), abs(y), _TINY)


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """max|a - b| scaled by the larger of the two arrays' largest magnitudes; inf when shapes differ."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    scale = max(np.max(np.abs(a), initial=0.0), np.max(np.abs(b), initial=0.0), _TINY)
    return float(np.max(np.abs(a - b), initial=0.0) / scale)


def max_abs_difference(a: np.ndarray, b: np.ndarray) -> float:
    """max|a - b| in float64; inf when shapes differ."""
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a.astype(np.float64) - b), initial=0.0))
