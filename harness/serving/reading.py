"""What a served model answers for a batch of images, and the arithmetic that turns a worker's
logits and feature maps into it (probabilities, flags at the card's thresholds, CAMs at 0..1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.special

from harness.evaluation.cams import class_activation_maps, normalise, upsample


class ServingError(RuntimeError):
    """A model that could not be served: its weights refused, or its worker failed to start or died."""


@dataclass(frozen=True)
class Reading:
    """One model's reading of a batch of n images."""

    model: str  # the reference asked for, e.g. "cxrbench-resnet50-pytorch@champion"
    labels: tuple[str, ...]  # the card's label names, in logit order
    probabilities: np.ndarray  # (n, L) float64: the sigmoid of the logits
    logits: np.ndarray  # (n, L) float32, as the worker computed them
    flags: np.ndarray  # (n, L) bool: probability >= the card's threshold for that label
    thresholds: np.ndarray  # (L,) float64: the card's thresholds (chosen on validation)
    maps: np.ndarray | None = None  # (n, L, size, size) float32 CAMs in 0..1 at the model's input size, when asked


def card_field(card: dict, key: str, reference: str) -> Any:
    """`card[key]`, or a ServingError naming the model and the missing field."""
    if key not in card:
        raise ServingError(f"model {reference}: its model card has no '{key}' field")
    return card[key]


def card_thresholds(card: dict, reference: str) -> np.ndarray:
    """The card's thresholds as float64 (L,), checked against its labels."""
    labels = list(card_field(card, "labels", reference))
    thresholds = np.asarray(card_field(card, "thresholds", reference), np.float64)
    if thresholds.shape != (len(labels),) or not np.isfinite(thresholds).all():
        raise ServingError(f"model {reference}: the card's thresholds {thresholds.shape} are not {len(labels)} "
                           "finite numbers, one per label")
    return thresholds


def make_reading(reference: str, labels: tuple[str, ...], thresholds: np.ndarray, logits: np.ndarray,
                 maps: np.ndarray | None) -> Reading:
    """The Reading of `logits` (n, L): probabilities in float64 (expit, exact in the tails), flags."""
    probabilities = scipy.special.expit(logits.astype(np.float64))
    return Reading(model=reference, labels=labels, probabilities=probabilities, logits=logits.astype(np.float32),
                   flags=probabilities >= thresholds[np.newaxis, :], thresholds=thresholds, maps=maps)


def activation_maps(features: np.ndarray, head: np.ndarray, size: int) -> np.ndarray:
    """features (n, C, h, w) and the head weight (L, C) -> CAMs float32 (n, L, size, size) in 0..1.

    The harness's formula (harness.evaluation.cams), as for the benchmark's localisation: the raw
    map, bilinear upsampling to the input size, min-max scaling per map (a constant map is all zeros).
    One image at a time, so the float64 intermediates stay at one image's size.
    """
    cams = class_activation_maps(features, head)
    out = np.empty((cams.shape[0], cams.shape[1], size, size), np.float32)
    for index in range(cams.shape[0]):
        out[index] = normalise(upsample(cams[index], size))
    return out
