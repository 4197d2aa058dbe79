"""Class activation maps, computed by the harness from a worker's final feature maps and head weights.

For a network that ends in global average pooling and one linear layer (ResNet-50, DenseNet-121),
logit_c = b_c + mean_xy sum_k w_ck F_k(x, y), so CAM_c = sum_k w_ck F_k is exact (Zhou et al. 2016):
its spatial mean plus the bias is the logit. The bias shifts every location alike and is left out.

For localisation a map goes to the stored image's resolution (upsample: torch's bilinear rule),
is scaled to [0, 1] (normalise), and is thresholded into connected regions and their boxes
(regions); harness.evaluation.localization scores those against the true boxes.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage


def class_activation_maps(features: np.ndarray, head_weight: np.ndarray) -> np.ndarray:
    """features float32 (N, C, h, w) channels first, head_weight (L, C) -> CAMs float32 (N, L, h, w).

    Computed in float64 and returned as float32, so the result does not depend on summation order
    beyond float32 rounding of the inputs.
    """
    features = np.asarray(features)
    head_weight = np.asarray(head_weight)
    if features.ndim != 4:
        raise ValueError(f"features must be (N, C, h, w), got shape {features.shape}")
    if head_weight.ndim != 2 or head_weight.shape[1] != features.shape[1]:
        raise ValueError(f"head weight must be (L, {features.shape[1]}) for {features.shape[1]} feature channels, "
                         f"got shape {head_weight.shape}")
    maps = np.einsum("lc,nchw->nlhw", head_weight.astype(np.float64), features.astype(np.float64))
    return maps.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# From a map at feature resolution to regions at image resolution
# ---------------------------------------------------------------------------------------------

COMPONENTS = ("largest", "all")


def _interpolation_matrix(source: int, size: int) -> np.ndarray:
    """(size, source) weights of 1-D linear interpolation with half-pixel centres and edge clamping."""
    position = (np.arange(size, dtype=np.float64) + 0.5) * (source / size) - 0.5
    position = np.maximum(position, 0.0)  # before the first centre: the first value (torch clamps at 0)
    low = np.floor(position).astype(np.int64)
    low = np.minimum(low, source - 1)
    high = np.minimum(low + 1, source - 1)  # past the last centre: the last value
    fraction = position - low
    weights = np.zeros((size, source), dtype=np.float64)
    rows = np.arange(size)
    np.add.at(weights, (rows, low), 1.0 - fraction)
    np.add.at(weights, (rows, high), fraction)
    return weights


def upsample(maps: np.ndarray, size: int) -> np.ndarray:
    """maps (..., h, w) -> float64 (..., size, size), bilinear with half-pixel centres and clamped edges.

    The rule of torch.nn.functional.interpolate(mode="bilinear", align_corners=False), applied along
    each axis in turn (it is separable): output pixel i of an axis of n source pixels reads the
    source position p = max((i + 0.5) * n / size - 0.5, 0), i0 = floor(p), i1 = min(i0 + 1, n - 1),
    and takes (1 - (p - i0)) * m[i0] + (p - i0) * m[i1]. So a 2-pixel row [a, b] becomes
    [a, 0.75a + 0.25b, 0.25a + 0.75b, b] at 4 pixels. Computed in float64.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim < 2 or min(maps.shape[-2:]) < 1:
        raise ValueError(f"maps must be (..., h, w) with h, w >= 1, got shape {maps.shape}")
    if int(size) != size or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    rows = _interpolation_matrix(maps.shape[-2], int(size))
    columns = _interpolation_matrix(maps.shape[-1], int(size))
    return rows @ maps @ columns.T


def normalise(maps: np.ndarray) -> np.ndarray:
    """Min-max scaling of each map (the last two axes) to [0, 1], as float64.

    (m - min) / (max - min); a constant map (max == min: no location stands out) becomes all
    zeros, so no threshold above 0 selects any of it. Refuses NaN or infinite values.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim < 2:
        raise ValueError(f"maps must be (..., h, w), got shape {maps.shape}")
    if not np.isfinite(maps).all():
        raise ValueError(f"{int((~np.isfinite(maps)).sum())} map values are NaN or infinite")
    low = maps.min(axis=(-2, -1), keepdims=True)
    span = maps.max(axis=(-2, -1), keepdims=True) - low
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1.0), 0.0)


def regions(map01: np.ndarray, threshold: float, components: str = "all") -> tuple[np.ndarray, np.ndarray]:
    """The detected region of one normalised map (S, S): a bool mask (S, S) and boxes int64 (K, 4).

    Pixels with value >= threshold form 8-connected components (scipy.ndimage.label with a 3x3
    structure of ones). "all" keeps every component; "largest" keeps the one with the most pixels,
    ties broken by the component that holds the map's maximum (np.argmax: the first maximum in
    row-major order), then by the first component in row-major order of its first pixel. Each kept
    component gives one box (x, y, w, h): its bounding box, covering pixels x..x+w-1 and y..y+h-1;
    boxes are in row-major order of the components' first pixels. No pixel above the threshold
    gives an empty mask and no box.
    """
    map01 = np.asarray(map01, dtype=np.float64)
    if map01.ndim != 2:
        raise ValueError(f"regions takes one map (S, S), got shape {map01.shape}")
    if components not in COMPONENTS:
        raise ValueError(f"components must be one of {COMPONENTS}, got {components!r}")
    above = map01 >= threshold
    labelled, count = scipy.ndimage.label(above, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return np.zeros_like(above), np.zeros((0, 4), dtype=np.int64)
    if components == "largest":
        sizes = np.bincount(labelled.reshape(-1), minlength=count + 1)[1:]
        tied = np.flatnonzero(sizes == sizes.max()) + 1
        at_maximum = int(labelled.reshape(-1)[np.argmax(map01)])
        keep = at_maximum if at_maximum in tied else int(tied[0])
        labelled = np.where(labelled == keep, 1, 0)
        count = 1
    boxes = np.array([(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
                      for rows, cols in scipy.ndimage.find_objects(labelled, max_label=count)], dtype=np.int64)
    return labelled > 0, boxes.reshape(-1, 4)


def pointing_location(map01: np.ndarray) -> tuple[int, int]:
    """(row, column) the map points at: its maximum; where the maximum is a plateau, the pixel at the
    plateau's centroid (rounded half to even).

    Bilinear upsampling with clamped edges turns a border cell's maximum into a plateau reaching the
    image's edge; taking its first pixel (np.argmax) would point at the edge or the corner of the image
    whatever the map says, so a coarse map would score below a random point. On a rectangular plateau
    (a border or corner cell) the centroid is inside it; a constant map points at the image's centre."""
    peak = map01 >= map01.max()
    rows, columns = np.nonzero(peak)
    row, column = int(np.round(rows.mean())), int(np.round(columns.mean()))
    if not peak[row, column]:  # a plateau that is not convex: its first pixel in row-major order
        row, column = int(rows[0]), int(columns[0])
    return row, column
