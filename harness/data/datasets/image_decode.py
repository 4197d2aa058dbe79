"""Decode one radiograph PNG to an 8-bit grayscale square, refusing files that are not safe to use.

One job: bytes on disk -> uint8 (size, size). Checks run cheapest first, and a truncated file is
caught by its missing IEND chunk before libpng ever sees it (libpng on a cut-off stream prints
warnings and may hand back a partly filled image). Conversions are done only where no information
is lost or invented: 16-bit values are scaled, identical colour channels collapse to one, a fully
opaque alpha channel is dropped. Anything else (colour, transparency) is refused with a reason.

The caller sets OpenCV's thread count (cv2.setNumThreads) and names the file in its messages;
`BadImage` carries only the reason.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A PNG ends with an empty IEND chunk: length 0, type "IEND", and its fixed CRC.
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"

_OPAQUE = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}
_COLOUR_NAMES = {3: "RGB", 4: "RGBA"}


class BadImage(Exception):
    """An image file that cannot be used; the message is a reason sentence without the path."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_grayscale(path: Path, size: int) -> tuple[np.ndarray, str | None]:
    """Read the PNG at `path` and return (C-contiguous uint8 (size, size) pixels, conversion note).

    The note says what was converted (e.g. "16-bit grayscale scaled to 8-bit"), or is None when the
    file was already 8-bit grayscale. Raises BadImage for an empty, non-PNG, truncated or corrupt
    file, and for images that are not grayscale (channels differ, alpha not opaque, other types).
    Sources are resized to a square with INTER_AREA when shrinking and INTER_LINEAR when enlarging.
    """
    data = Path(path).read_bytes()
    _check_png_bytes(data)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as error:  # some decoder failures raise instead of returning None
        raise BadImage(f"corrupt PNG: OpenCV cannot decode it ({error.err}); replace the file") from None
    if image is None or image.size == 0:
        raise BadImage("corrupt PNG: OpenCV cannot decode it; replace the file")
    gray, note = to_grayscale_u8(image)
    return resize_square(gray, size), note


def _check_png_bytes(data: bytes) -> None:
    """Refuse what need not reach the decoder: empty, not a PNG, cut off before the IEND chunk."""
    if not data:
        raise BadImage("empty file (0 bytes); replace it with the original PNG")
    if not data.startswith(PNG_SIGNATURE):
        raise BadImage("not a PNG (the file does not start with the PNG signature)")
    if not data.endswith(PNG_IEND):
        raise BadImage(f"truncated PNG ({len(data):,} bytes, no IEND chunk at the end); unpack or download it again")


def to_grayscale_u8(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """A decoded image (as cv2.IMREAD_UNCHANGED returns it) as 2-D uint8 gray, and what was converted.

    Raises BadImage where conversion would lose or invent information.
    """
    if image.dtype not in _OPAQUE:
        raise BadImage(f"unsupported pixel type {image.dtype} (expected 8- or 16-bit)")
    notes = []
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3:
        channels = image.shape[2]
        if channels not in _COLOUR_NAMES:
            raise BadImage(f"unsupported image with {channels} channels (expected grayscale, RGB or RGBA)")
        # Views, no copies: compare channel planes in place, keep one of them.
        if not (np.array_equal(image[:, :, 0], image[:, :, 1]) and np.array_equal(image[:, :, 0], image[:, :, 2])):
            raise BadImage("colour image (channels differ): not a grayscale radiograph")
        if channels == 4 and image[:, :, 3].min() != _OPAQUE[image.dtype]:
            raise BadImage("alpha channel is not fully opaque: transparency has no meaning in a radiograph")
        notes.append(
            f"{_COLOUR_NAMES[channels]} with identical channels"
            + (" and opaque alpha" if channels == 4 else "")
            + " converted to grayscale"
        )
        image = image[:, :, 0]
    elif image.ndim != 2:
        raise BadImage(f"unsupported image shape {image.shape}")
    if image.dtype == np.uint16:
        # round(v / 257) maps 0..65535 onto 0..255 exactly (65535 -> 255, 257 -> 1); no ties exist
        # because 257 is odd, so float32 rounding inside OpenCV gives the same integers.
        image = cv2.convertScaleAbs(np.ascontiguousarray(image), alpha=1.0 / 257.0)
        notes.append("16-bit grayscale scaled to 8-bit" if not notes else "16-bit scaled to 8-bit")
    return image, "; ".join(notes) or None


def resize_square(gray: np.ndarray, size: int) -> np.ndarray:
    """2-D uint8 -> C-contiguous (size, size): INTER_AREA when shrinking, INTER_LINEAR when enlarging."""
    height, width = gray.shape
    if height == size and width == size:
        return np.ascontiguousarray(gray)
    # Area averaging avoids aliasing when shrinking; it is no better than linear when enlarging.
    interpolation = cv2.INTER_AREA if height >= size and width >= size else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(gray), (size, size), interpolation=interpolation)
