"""Boxes (x, y, w, h) in pixels of the stored image: a box covers pixels x..x+w-1 and y..y+h-1, so its
area is w * h and two boxes intersect in a whole number of pixels. IoU, and IoBB (intersection over
the detected box, Wang et al. 2017), as localisation scores them (harness.evaluation.localization).
"""

from __future__ import annotations

import numpy as np


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pixels two boxes (..., 4) have in common (they broadcast)."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    width = np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    height = np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    return np.maximum(width, 0) * np.maximum(height, 0)


def _area(box: np.ndarray) -> np.ndarray:
    box = np.asarray(box, dtype=np.int64)
    return box[..., 2] * box[..., 3]


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes (..., 4) (x, y, w, h); a and b broadcast, so a[:, None] and
    b[None] give every pair. 0 where both boxes are empty."""
    inter = _intersection(a, b)
    union = _area(a) + _area(b) - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def iobb(detected: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Intersection over the DETECTED box's area (Wang et al. 2017), boxes (..., 4) broadcast; 0 for
    an empty detected box. A detected box inside the true one has IoBB 1 whatever its size."""
    inter = _intersection(detected, truth)
    area = _area(detected)
    return np.where(area > 0, inter / np.maximum(area, 1), 0.0)


def box_mask(boxes: np.ndarray, size: int) -> np.ndarray:
    """The union of boxes (K, 4) as a bool pixel mask (size, size), indexed [y, x]."""
    mask = np.zeros((size, size), dtype=bool)
    for x, y, w, h in np.asarray(boxes, dtype=np.int64).reshape(-1, 4):
        mask[y : y + h, x : x + w] = True
    return mask


def centred_box(size: int) -> np.ndarray:
    """The chance baseline's box (1, 4): w = h = size // 2 at x = y = (size - w) // 2."""
    side = size // 2
    start = (size - side) // 2
    return np.array([[start, start, side, side]], dtype=np.int64)
