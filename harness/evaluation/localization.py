"""Localisation scores: each worker's class activation maps against the true boxes, by one module.

A case is one (image, finding) pair with at least one true box. Each case's raw CAM is upsampled
to the stored image (S x S, harness.evaluation.cams.upsample), scaled to [0, 1] (normalise) and
thresholded into regions (regions), then scored three ways:

* Wang et al. 2017 (ChestX-ray8): a case is correct at overlap T when some detected box has
  IoBB > T (or IoU > T) with some true box: strictly greater, as the paper writes "IoBB > T(IoBB)";
  a detected box that exceeds T with no true box is a false positive. Accuracy is the mean of
  correct over cases, AFP (average false positives) the mean count of false positives per case.
* CheXlocalize (Saporta et al. 2022): mask IoU between the thresholded map and the union of the true
  boxes as a pixel mask; and the pointing game: a hit when the map's maximum (of the upsampled,
  normalised map; where the maximum is a plateau, its centroid: cams.pointing_location) lies inside a
  true box, edges included.
* Chance, computed exactly: a uniformly random point hits with probability (area of the union of
  the true boxes) / S^2; a centred box of half the image's width and height, scored as a detected box
  (Wang accuracy and AFP) and as a detected mask (mask IoU).

Boxes are (x, y, w, h) in pixels of the stored image and cover pixels x..x+w-1, y..y+h-1, so areas
are w * h and intersections whole pixel counts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from harness.evaluation.cams import COMPONENTS, normalise, pointing_location, regions, upsample
from harness.evaluation.localization_boxes import box_mask, centred_box, iobb, iou

__all__ = ["CaseScores", "LocalizationCases", "ThresholdChoice", "box_mask", "centred_box", "iobb", "iou",
           "localization_cases", "score_cases", "tune_thresholds"]

OVERLAP_THRESHOLDS = (0.1, 0.25, 0.5, 0.75, 0.9)
FIXED_THRESHOLD = 0.5  # on the normalised map, when no threshold was tuned
DEFAULT_GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05 .. 0.95


# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalizationCases:
    """Every (image, label) pair with a true box, in order of image row then label.

    `image` indexes the rows of the `cams` they came from (so patient_ids[image] is each case's
    patient), `sample` their sample indices, `label` their label indices; `maps` (C, h, w) the raw CAMs;
    the true boxes of case c are truth[truth_start[c] : truth_start[c + 1]] (x, y, w, h), clipped to
    the image.
    """

    image_size: int
    labels: int
    image: np.ndarray
    sample: np.ndarray
    label: np.ndarray
    maps: np.ndarray
    truth: np.ndarray
    truth_start: np.ndarray

    def __len__(self) -> int:
        return len(self.image)

    def truth_boxes(self, case: int) -> np.ndarray:
        """The true boxes (K, 4) of one case."""
        return self.truth[self.truth_start[case] : self.truth_start[case + 1]]


def localization_cases(cams: np.ndarray, sample_index: np.ndarray, boxes: np.ndarray,
                       image_size: int) -> LocalizationCases:
    """Gather the cases: cams (n, L, h, w), sample_index (n,) their pixel-store indices, boxes (M, 6)
    rows (sample index, label index, x, y, w, h) in pixels of the S x S stored image.

    Boxes of samples not in sample_index (other splits) are ignored. Boxes are clipped to the image;
    a box with no pixel inside it, a label index outside 0..L-1, or a sample listed twice is refused.
    """
    cams = np.asarray(cams)
    sample_index = np.asarray(sample_index, dtype=np.int64).reshape(-1)
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 6) if np.size(boxes) else np.zeros((0, 6), np.int64)
    if cams.ndim != 4 or len(cams) != len(sample_index):
        raise ValueError(f"cams must be (n, L, h, w) for {len(sample_index)} samples, got shape {cams.shape}")
    if int(image_size) != image_size or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if len(np.unique(sample_index)) != len(sample_index):
        raise ValueError("sample_index lists a sample more than once: each image must appear once")
    labels = cams.shape[1]
    bad_label = (boxes[:, 1] < 0) | (boxes[:, 1] >= labels)
    if bad_label.any():
        row = int(np.flatnonzero(bad_label)[0])
        raise ValueError(f"box row {row}: label index {boxes[row, 1]} outside 0..{labels - 1}")
    order = np.argsort(sample_index, kind="stable")
    position = np.searchsorted(sample_index[order], boxes[:, 0])
    found = position < len(order)
    found[found] = sample_index[order][position[found]] == boxes[found, 0]
    boxes, rows = boxes[found], order[position[found]]
    x0 = np.clip(boxes[:, 2], 0, image_size)
    y0 = np.clip(boxes[:, 3], 0, image_size)
    x1 = np.clip(boxes[:, 2] + boxes[:, 4], 0, image_size)
    y1 = np.clip(boxes[:, 3] + boxes[:, 5], 0, image_size)
    empty = (x1 <= x0) | (y1 <= y0)
    if empty.any():
        k = int(np.flatnonzero(empty)[0])
        raise ValueError(f"box {boxes[k, 2:].tolist()} of sample {boxes[k, 0]}, label {boxes[k, 1]}, has no pixel "
                         f"inside the {image_size} x {image_size} image: boxes must be in stored-image pixels")
    key = rows * labels + boxes[:, 1]
    sort = np.argsort(key, kind="stable")
    key, truth = key[sort], np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)[sort]
    case_keys, truth_start = np.unique(key, return_index=True)
    image, label = case_keys // labels, case_keys % labels
    return LocalizationCases(
        image_size=int(image_size), labels=int(labels), image=image, sample=sample_index[image], label=label,
        maps=np.asarray(cams[image, label], dtype=np.float32), truth=truth,
        truth_start=np.append(truth_start, len(truth)).astype(np.int64),
    )


# ---------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseScores:
    """Per-case scores of one run's maps (arrays over the cases, in the cases' order).

    correct_*[T] (bool) and false_positives_*[T] (int) per overlap threshold T (Wang et al.); hit
    (bool, pointing game) and mask_iou (CheXlocalize); detections, the number of detected boxes; the
    chance baselines random_point_hit (a probability) and centred_* (the centred box as detection).
    thresholds (L,) are the map thresholds used per label, components the region rule.
    """

    image: np.ndarray
    sample: np.ndarray
    label: np.ndarray
    thresholds: np.ndarray
    components: str
    overlap_thresholds: tuple[float, ...]
    detections: np.ndarray
    hit: np.ndarray
    mask_iou: np.ndarray
    correct_iobb: dict[float, np.ndarray]
    false_positives_iobb: dict[float, np.ndarray]
    correct_iou: dict[float, np.ndarray]
    false_positives_iou: dict[float, np.ndarray]
    random_point_hit: np.ndarray
    centred_mask_iou: np.ndarray
    centred_correct_iobb: dict[float, np.ndarray]
    centred_false_positives_iobb: dict[float, np.ndarray]
    centred_correct_iou: dict[float, np.ndarray]
    centred_false_positives_iou: dict[float, np.ndarray]


def _wang(detected: np.ndarray, truth: np.ndarray, overlap: Callable[[np.ndarray, np.ndarray], np.ndarray],
          thresholds: Sequence[float]) -> tuple[list[bool], list[int]]:
    """Correct (some detected box overlaps some true box by more than T) and false positives
    (detected boxes that overlap no true box by more than T), for each T."""
    if len(detected) == 0:
        return [False] * len(thresholds), [0] * len(thresholds)
    best = overlap(detected[:, None, :], truth[None, :, :]).max(axis=1)
    return [bool((best > t).any()) for t in thresholds], [int((best <= t).sum()) for t in thresholds]


def _mask_iou(mask: np.ndarray, truth_mask: np.ndarray) -> float:
    union = np.count_nonzero(mask | truth_mask)
    return np.count_nonzero(mask & truth_mask) / union if union else 0.0


def _per_label(thresholds: float | Sequence[float] | np.ndarray, labels: int) -> np.ndarray:
    """One map threshold per label, from one number or one per label."""
    values = np.asarray(thresholds, dtype=np.float64)
    values = np.full(labels, float(values)) if values.ndim == 0 else values
    if values.shape != (labels,) or not np.isfinite(values).all():
        raise ValueError(f"thresholds must be one number or {labels} finite numbers (one per label), "
                         f"got {thresholds!r}")
    return values


def _case_map(cases: LocalizationCases, case: int) -> np.ndarray:
    return normalise(upsample(cases.maps[case], cases.image_size))


def score_cases(cases: LocalizationCases, thresholds_per_label: float | Sequence[float] | np.ndarray = FIXED_THRESHOLD,
                components: str = "all",
                overlap_thresholds: Sequence[float] = OVERLAP_THRESHOLDS) -> CaseScores:
    """Score every case (see the module docstring for each rule); the map threshold of a case is
    thresholds_per_label[its label] (one number: the same for all), applied to the normalised map."""
    if components not in COMPONENTS:
        raise ValueError(f"components must be one of {COMPONENTS}, got {components!r}")
    thresholds = _per_label(thresholds_per_label, cases.labels)
    overlaps = tuple(float(t) for t in overlap_thresholds)
    size = cases.image_size
    centre = centred_box(size)
    centre_mask = box_mask(centre, size)
    n = len(cases)
    detections = np.zeros(n, dtype=np.int64)
    hit = np.zeros(n, dtype=bool)
    mask_iou, random_point, centred_mask_iou = np.zeros(n), np.zeros(n), np.zeros(n)
    wang = {name: np.zeros((len(overlaps), n), dtype=np.int64) for name in
            ("correct_iobb", "false_positives_iobb", "correct_iou", "false_positives_iou", "centred_correct_iobb",
             "centred_false_positives_iobb", "centred_correct_iou", "centred_false_positives_iou")}
    for case in range(n):
        truth = cases.truth_boxes(case)
        truth_mask = box_mask(truth, size)
        map01 = _case_map(cases, case)
        mask, detected = regions(map01, thresholds[cases.label[case]], components)
        detections[case] = len(detected)
        row, column = pointing_location(map01)
        hit[case] = truth_mask[row, column]
        mask_iou[case] = _mask_iou(mask, truth_mask)
        random_point[case] = np.count_nonzero(truth_mask) / size**2
        centred_mask_iou[case] = _mask_iou(centre_mask, truth_mask)
        for prefix, boxes in (("", detected), ("centred_", centre)):
            for kind, overlap in (("iobb", iobb), ("iou", iou)):
                correct, false_positives = _wang(boxes, truth, overlap, overlaps)
                wang[f"{prefix}correct_{kind}"][:, case] = correct
                wang[f"{prefix}false_positives_{kind}"][:, case] = false_positives
    per_threshold = {name: {t: (values[k].astype(bool) if "correct" in name else values[k])
                            for k, t in enumerate(overlaps)} for name, values in wang.items()}
    return CaseScores(image=cases.image, sample=cases.sample, label=cases.label, thresholds=thresholds,
                      components=components, overlap_thresholds=overlaps, detections=detections, hit=hit,
                      mask_iou=mask_iou, random_point_hit=random_point, centred_mask_iou=centred_mask_iou,
                      **per_threshold)


# ---------------------------------------------------------------------------------------------
# Threshold choice
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdChoice:
    """Tuned map thresholds (L,), the labels (indices) that had no validation case and kept `fixed`,
    and the mean mask IoU of every label at every grid value (L, G; NaN for those labels)."""

    thresholds: np.ndarray
    fell_back: tuple[int, ...]
    grid: tuple[float, ...]
    mean_iou: np.ndarray
    fixed: float
    components: str


def tune_thresholds(validation_cases: LocalizationCases, grid: Sequence[float] = DEFAULT_GRID,
                    components: str = "all", fixed: float = FIXED_THRESHOLD) -> ThresholdChoice:
    """Per label, the grid value that maximises the mean mask IoU over that label's validation cases
    (ties: the smallest such value, the first in grid order); a label without a validation case keeps
    `fixed` and is listed in fell_back. Tune on validation cases, never on the test cases scored."""
    if components not in COMPONENTS:
        raise ValueError(f"components must be one of {COMPONENTS}, got {components!r}")
    grid = tuple(float(t) for t in grid)
    if not grid:
        raise ValueError("grid is empty: give at least one threshold")
    cases, size = validation_cases, validation_cases.image_size
    totals = np.zeros((cases.labels, len(grid)))
    counts = np.bincount(cases.label, minlength=cases.labels)
    for case in range(len(cases)):
        map01 = _case_map(cases, case)
        truth_mask = box_mask(cases.truth_boxes(case), size)
        for k, threshold in enumerate(grid):
            # "all" keeps every pixel above the threshold: no need to label components.
            mask = map01 >= threshold if components == "all" else regions(map01, threshold, components)[0]
            totals[cases.label[case], k] += _mask_iou(mask, truth_mask)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_iou = np.where(counts[:, None] > 0, totals / np.maximum(counts, 1)[:, None], np.nan)
    chosen = np.array(grid)[np.argmax(np.nan_to_num(mean_iou, nan=-1.0), axis=1)]
    fell_back = tuple(int(j) for j in np.flatnonzero(counts == 0))
    thresholds = np.where(counts > 0, chosen, float(fixed))
    return ThresholdChoice(thresholds=thresholds, fell_back=fell_back, grid=grid, mean_iou=mean_iou,
                           fixed=float(fixed), components=components)
