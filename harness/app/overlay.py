"""A class activation map drawn over the radiograph, as an RGB image the page shows with st.image."""

from __future__ import annotations

import cv2
import matplotlib
import numpy as np

from harness.evaluation.cams import upsample

DISPLAY_SIZE = 320  # pixels: large enough to see a 7x7 map's blobs, small enough for ten maps on a page


def display_image(pixels: np.ndarray, longest: int = 768) -> np.ndarray:
    """A full-resolution radiograph shrunk (never enlarged) so its longest side is at most `longest`.

    A 3000 px DICOM would otherwise be PNG-encoded and sent to every browser at full size.
    """
    height, width = pixels.shape[:2]
    scale = longest / max(height, width)
    if scale >= 1:
        return pixels
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def cam_overlay(image: np.ndarray, cam: np.ndarray, size: int = DISPLAY_SIZE, strength: float = 0.6,
                colormap: str = "jet") -> np.ndarray:
    """image uint8 (s, s) as the model read it, cam (h, w) in 0..1 -> uint8 (size, size, 3).

    The map is upsampled with the rule localisation uses (harness.evaluation.cams.upsample) and
    coloured with a matplotlib colormap; each pixel's colour is mixed in in proportion to the map's
    value, so where the model did not look the radiograph stays plain grey and readable.
    """
    if image.ndim != 2 or cam.ndim != 2:
        raise ValueError(f"image and map must be 2-D, got shapes {image.shape} and {cam.shape}")
    grey = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR)
    heat = np.clip(upsample(np.asarray(cam, dtype=np.float64), size), 0.0, 1.0)
    colours = matplotlib.colormaps[colormap](heat)[..., :3]
    weight = strength * heat[..., None]
    mixed = (1.0 - weight) * (grey[..., None] / 255.0) + weight * colours
    return np.round(mixed * 255.0).astype(np.uint8)
