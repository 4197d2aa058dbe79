"""Training augmentation, done once by the harness: every worker receives the very same bytes.

Random horizontal flip and rotation within +-20 degrees, as in the reference study. A sample's
augmentation depends only on (seed, epoch, sample index in the pixel store), never on the batch it
lands in or its position there, so the training bytes are reproducible and identical for every
framework. Angles follow OpenCV: a positive angle rotates counter-clockwise (as `np.rot90`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

ACCEPTED = "'none', or comma-separated 'flip' and 'rotate=DEG' with 0 < DEG <= 180 (e.g. 'flip,rotate=20')"
# Third entropy word of the augmentation stream, so it never coincides with the epoch order's
# default_rng([seed, epoch]) stream ("aug" in ASCII).
_STREAM_TAG = 0x617567
# The harness shares the cores with the worker it feeds: one OpenCV thread keeps its share small
# and steady (threads bring nothing on images this small).
cv2.setNumThreads(1)


@dataclass(frozen=True)
class Augmentation:
    """What to do to each training image: flip horizontally with p=0.5, rotate by U(-deg, +deg)."""

    flip: bool = True
    rotate_degrees: float = 20.0  # 0: no rotation

    def __post_init__(self) -> None:
        if not 0 <= self.rotate_degrees <= 180:
            raise ValueError(f"--augment: rotation {self.rotate_degrees:g} degrees is outside 0 to 180")

    @classmethod
    def parse(cls, spec: str) -> Augmentation:
        """Parse an --augment value: 'none', or 'flip', 'rotate=DEG', comma-separated."""
        items = [item.strip() for item in spec.split(",")]
        if items == ["none"]:
            return cls(flip=False, rotate_degrees=0.0)
        if "none" in items:
            raise ValueError(
                f"--augment: 'none' cannot be combined with other items in {spec!r} (accepted: {ACCEPTED})"
            )
        flip, rotate = False, None
        for item in items:
            if item == "flip" and not flip:
                flip = True
            elif item.startswith("rotate=") and rotate is None:
                rotate = _parse_degrees(item)
            elif item == "flip" or item.startswith("rotate="):
                raise ValueError(f"--augment: {item!r} is given twice in {spec!r} (accepted: {ACCEPTED})")
            else:
                raise ValueError(f"--augment: unknown item {item!r} in {spec!r} (accepted: {ACCEPTED})")
        return cls(flip=flip, rotate_degrees=rotate or 0.0)

    @property
    def enabled(self) -> bool:
        """Whether any image is changed at all."""
        return self.flip or self.rotate_degrees > 0

    @property
    def spec(self) -> str:
        """The --augment value that parses back to this augmentation."""
        items = (["flip"] if self.flip else []) + ([f"rotate={self.rotate_degrees:g}"] if self.rotate_degrees else [])
        return ",".join(items) or "none"

    def describe(self) -> str:
        """One sentence for the report."""
        parts = []
        if self.flip:
            parts.append("random horizontal flip (p=0.5)")
        if self.rotate_degrees:
            parts.append(f"rotation uniformly within +-{self.rotate_degrees:g} degrees, bilinear, zero fill")
        return " and ".join(parts) or "none"


def _parse_degrees(item: str) -> float:
    text = item.removeprefix("rotate=")
    try:
        degrees = float(text)
    except ValueError:
        degrees = float("nan")
    if not 0 < degrees <= 180:  # also refuses nan
        raise ValueError(f"--augment: {item!r} needs a number of degrees with 0 < DEG <= 180 (accepted: {ACCEPTED})")
    return degrees


def epoch_parameters(aug: Augmentation, samples: int, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """Flip (bool) and angle (float64 degrees) of every store sample 0..samples-1 in `epoch`.

    Drawn as whole arrays from one (seed, epoch) stream, so a sample's parameters depend only on
    (seed, epoch, index). Both arrays are always drawn, so turning flip off leaves the angles alone.
    """
    rng = np.random.default_rng([seed, epoch, _STREAM_TAG])
    flips = rng.random(samples) < 0.5
    angles = rng.uniform(-1.0, 1.0, samples) * aug.rotate_degrees
    if not aug.flip:
        flips[:] = False
    return flips, angles


def augment_batch(pixels: np.ndarray, flips: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """A new (n, H, W) uint8 array: each image flipped horizontally if asked, then rotated.

    Rotation is about the image centre ((W-1)/2, (H-1)/2), counter-clockwise for positive degrees,
    bilinear, with zeros filling the corners. An angle of 0 leaves the (flipped) image exact.
    """
    if pixels.ndim != 3 or len(flips) != len(pixels) or len(angles) != len(pixels):
        raise ValueError(
            f"augment_batch: pixels {pixels.shape} (expected (n, H, W)), {len(flips)} flips, {len(angles)} angles"
        )
    if pixels.dtype != np.uint8:
        raise ValueError(f"augment_batch: pixels are {pixels.dtype}, expected uint8 (the pixel store's type)")
    return _augment_rows(pixels, np.arange(len(pixels)), flips, angles)


def _augment_rows(store: np.ndarray, rows: np.ndarray, flips: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Augment store[rows[i]] with flips[i], angles[i], reading each image in place (no gather copy)."""
    store = np.asarray(store)  # a plain view of a memmap: indexing it per image is cheaper
    height, width = store.shape[1:]
    out = np.empty((len(rows), height, width), dtype=np.uint8)
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    mirrored = np.empty((height, width), dtype=np.uint8)  # reused: the flipped source of a rotation
    for i, (row, flip, angle) in enumerate(zip(rows.tolist(), flips.tolist(), angles.tolist(), strict=True)):
        image = np.ascontiguousarray(store[row])
        if angle == 0:
            if flip:
                cv2.flip(image, 1, dst=out[i])  # about the vertical axis; 4x faster than copying [:, ::-1]
            else:
                out[i] = image
            continue
        source = cv2.flip(image, 1, dst=mirrored) if flip else image
        matrix = cv2.getRotationMatrix2D(centre, angle, 1.0)
        cv2.warpAffine(
            source, matrix, (width, height), dst=out[i],
            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
        )
    return out


class AugmentedPixels:
    """The pixel store as one training epoch sees it: `self[indices]` gives augmented images.

    Stands in for the raw array in `batches.training_batches`, which only gathers `pixels[chunk]`.
    """

    def __init__(self, pixels: np.ndarray, aug: Augmentation, seed: int, epoch: int) -> None:
        if pixels.ndim != 3 or pixels.dtype != np.uint8:
            raise ValueError(f"AugmentedPixels: pixels {pixels.dtype} {pixels.shape}, expected uint8 (N, H, W)")
        self.pixels = pixels
        self.aug = aug
        self.flips, self.angles = epoch_parameters(aug, len(pixels), seed, epoch)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.pixels.shape

    @property
    def dtype(self) -> np.dtype:
        return self.pixels.dtype

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, indices: np.ndarray) -> np.ndarray:
        """Augmented uint8 images (n, H, W) of the store samples `indices`, in that order."""
        indices = np.asarray(indices)
        if not self.aug.enabled:
            return self.pixels[indices]
        if indices.ndim == 0:
            return self[indices[None]][0]
        # Each image is read straight from the store: gathering a batch first would copy it twice.
        return _augment_rows(self.pixels, indices, self.flips[indices], self.angles[indices])
