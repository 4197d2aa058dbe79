"""Decode one uploaded radiograph (PNG, JPEG or DICOM bytes) to 8-bit grey, refusing what is not safe to read.

One job: (file name, bytes) -> Radiograph (full-resolution uint8 pixels, what was converted, pixel spacing),
and Radiograph -> the model's input, resized exactly as the training data was (`image_decode.resize_square`).
The format is told by the bytes, never by the name: the PNG signature, the JPEG start marker FF D8 FF, or
"DICM" after a DICOM file's 128-byte preamble. PNG and JPEG go through OpenCV and `image_decode`'s
conversions; DICOM through pydicom, which applies the modality LUT (rescale) and the VOI LUT (window) as
the standard describes, before MONOCHROME1 is inverted and the result scaled linearly to 0..255.

Every refusal is a BadUpload whose message names the file, says what is wrong and what to do.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder

from harness.data.datasets.image_decode import PNG_IEND, PNG_SIGNATURE, BadImage, resize_square, to_grayscale_u8

MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # default size limit
# Far above any chest radiograph (detectors are at most about 4,300 x 4,300 px), low enough that a small
# file claiming a huge image (a decompression bomb) is refused before it is decoded into gigabytes.
MAX_PIXELS = 50_000_000
JPEG_START = b"\xff\xd8\xff"
JPEG_END = b"\xff\xd9"
DICOM_MAGIC_OFFSET = 128  # "DICM" follows the 128-byte preamble of a DICOM Part 10 file
# An encoder's RGB -> YCbCr -> RGB rounding leaves grey saved as colour a level or two apart.
JPEG_GREY_TOLERANCE = 2
_ADVICE = "upload a grayscale chest radiograph as PNG, JPEG or DICOM"


@dataclass(frozen=True)
class Radiograph:
    """An uploaded image decoded to 8-bit grey at full resolution."""

    pixels: np.ndarray  # 2-D uint8, full resolution, as decoded
    source: str  # "PNG 16-bit grayscale", "JPEG grayscale", "DICOM MONOCHROME1", ...
    note: str | None  # what was converted (inverted, windowed, 16-bit scaled, ...), None if nothing
    pixel_spacing_mm: tuple[float, float] | None  # DICOM PixelSpacing / ImagerPixelSpacing (row, column)
    filename: str | None = None  # the uploaded file's name, for model_input's messages


class BadUpload(ValueError):
    """An upload that cannot be read as a radiograph; the message names the file and the reason."""

    def __init__(self, reason: str, filename: str | None = None) -> None:
        super().__init__(f"{filename}: {reason}" if filename else reason)
        self.reason = reason
        self.filename = filename


def decode_upload(filename: str, data: bytes, max_bytes: int = MAX_UPLOAD_BYTES) -> Radiograph:
    """Decode the uploaded file `filename` with contents `data` to a full-resolution 8-bit grey Radiograph.

    Raises BadUpload for an empty or too large file, one that is not PNG, JPEG or DICOM, a truncated or
    corrupt one, a colour or transparent image, and a DICOM file without decodable grey pixel data.
    """
    if not data:
        raise BadUpload(f"empty file (0 bytes); {_ADVICE}", filename)
    if len(data) > max_bytes:
        raise BadUpload(f"file too large ({len(data) / 2**20:,.1f} MB; the limit is {max_bytes / 2**20:g} MB); "
                        "downscale it or save it as an 8-bit PNG", filename)
    if data.startswith(PNG_SIGNATURE):
        return _decode_png(filename, data)
    if data.startswith(JPEG_START):
        return _decode_jpeg(filename, data)
    if data[DICOM_MAGIC_OFFSET:DICOM_MAGIC_OFFSET + 4] == b"DICM":
        return _decode_dicom(filename, data)
    raise BadUpload(_not_an_image(filename, data), filename)


def model_input(radiograph: Radiograph, image_size: int) -> np.ndarray:
    """The radiograph as the model reads it: uint8 (image_size, image_size), resized exactly as the training
    data (INTER_AREA when shrinking). Raises BadUpload when either side is smaller than `image_size`."""
    height, width = radiograph.pixels.shape
    if height < image_size or width < image_size:
        raise BadUpload(f"too small: {width} x {height} px; this model reads {image_size} x {image_size} px "
                        "images; upload the radiograph at full resolution", radiograph.filename)
    return resize_square(radiograph.pixels, image_size)


def _not_an_image(filename: str, data: bytes) -> str:
    """Why bytes that are neither PNG, JPEG nor DICOM Part 10 are refused, as specific as cheaply possible."""
    if filename.lower().endswith((".dcm", ".dicom")):
        return ("not a DICOM Part 10 file (no 'DICM' marker after a 128-byte preamble); export it from the "
                "viewer or PACS as a DICOM file, or as PNG")
    head = data[:4096]
    if head.startswith(b"%PDF"):
        kind = "a PDF document"
    elif all(byte >= 32 or byte in b"\t\n\r\f" for byte in head):  # UTF-8 text has no control bytes
        kind = "a text file"
    else:
        kind = "it starts with neither the PNG nor the JPEG signature nor a DICOM preamble"
    return f"not an image ({kind}); {_ADVICE}"


def _check_pixels(filename: str, width: int, height: int) -> None:
    """Refuse an image whose header claims more pixels than MAX_PIXELS, before decoding it."""
    if width * height > MAX_PIXELS:
        raise BadUpload(f"image too large ({width:,} x {height:,} px; the limit is {MAX_PIXELS / 1e6:g} "
                        "megapixels); downscale it", filename)


def _imdecode(filename: str, data: bytes, kind: str) -> np.ndarray:
    """OpenCV's decoding of `data` as stored (depth and channels unchanged); BadUpload when it fails."""
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as error:  # some decoder failures raise instead of returning None
        raise BadUpload(f"corrupt {kind}: it cannot be decoded ({error.err}); upload the original file",
                        filename) from None
    if image is None or image.size == 0:
        raise BadUpload(f"corrupt {kind}: it cannot be decoded; upload the original file", filename)
    return image


def _decode_png(filename: str, data: bytes) -> Radiograph:
    """PNG: the IEND chunk must end the file (libpng fills a cut-off image silently), then image_decode."""
    if not data.endswith(PNG_IEND):
        raise BadUpload(f"truncated PNG ({len(data):,} bytes, no IEND chunk at the end); upload the whole file",
                        filename)
    # IHDR is always the first chunk: width and height are big-endian at bytes 16..24.
    _check_pixels(filename, int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"))
    image = _imdecode(filename, data, "PNG")
    try:
        gray, note = to_grayscale_u8(image)
    except BadImage as error:
        raise BadUpload(f"{error.reason}; {_ADVICE}", filename) from None
    kind = {1: "grayscale", 3: "RGB", 4: "RGBA"}[1 if image.ndim == 2 else image.shape[2]]
    return Radiograph(gray, f"PNG {8 * image.itemsize}-bit {kind}", note, None, filename)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame segment, or None if the segments cannot be followed."""
    at = 2
    while at + 9 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        # SOF0..SOF15 carry the size; C4 (Huffman tables), C8 (reserved) and CC (arithmetic tables) do not.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return int.from_bytes(data[at + 7:at + 9], "big"), int.from_bytes(data[at + 5:at + 7], "big")
        at += 2 + int.from_bytes(data[at + 2:at + 4], "big")
    return None


def _decode_jpeg(filename: str, data: bytes) -> Radiograph:
    """JPEG: the EOI marker must end the file (zero padding allowed); grey, or RGB within the tolerance."""
    if not data.rstrip(b"\0").endswith(JPEG_END):
        raise BadUpload(f"truncated JPEG ({len(data):,} bytes, no end-of-image marker FF D9 at the end); "
                        "upload the whole file", filename)
    _check_pixels(filename, *(_jpeg_size(data) or (0, 0)))  # (0, 0): no size found, OpenCV's own limit holds
    image = _imdecode(filename, data, "JPEG")
    if image.dtype != np.uint8:
        raise BadUpload("JPEG with more than 8 bits per sample is not supported; save it as a 16-bit PNG or "
                        "as DICOM", filename)
    if image.ndim == 2:
        return Radiograph(image, "JPEG grayscale", None, None, filename)
    spread = int((image.max(axis=2).astype(np.int16) - image.min(axis=2)).max())
    if spread > JPEG_GREY_TOLERANCE:
        raise BadUpload(f"colour image (channels differ by up to {spread} grey levels): not a grayscale "
                        f"radiograph; {_ADVICE}", filename)
    # Rounded mean of the three channels, in integers: (sum + 1) // 3 never meets a tie.
    gray = ((image.sum(axis=2, dtype=np.uint16) + 1) // 3).astype(np.uint8)
    note = ("RGB with identical channels converted to grayscale" if spread == 0 else
            f"RGB with channels at most {spread} grey levels apart (JPEG colour rounding) averaged to grayscale")
    return Radiograph(gray, "JPEG RGB", note, None, filename)


def _decode_dicom(filename: str, data: bytes) -> Radiograph:
    """DICOM through pydicom; any failure to read the file's elements is a BadUpload."""
    try:
        return _dicom_radiograph(filename, pydicom.dcmread(io.BytesIO(data)))
    except BadUpload:
        raise
    # Untrusted bytes: pydicom reads elements lazily and raises many kinds (EOFError, struct.error,
    # ValueError for a malformed UID, NotImplementedError for an unknown VR, ...) wherever one is read.
    except Exception as error:
        raise BadUpload(f"malformed DICOM file ({_first_line(error)}); upload the whole, original file",
                        filename) from None


def _dicom_radiograph(filename: str, ds: Dataset) -> Radiograph:
    """Modality LUT, VOI LUT (window), MONOCHROME1 inverted, scaled linearly to 0..255."""
    if "PixelData" not in ds:
        raise BadUpload("DICOM file without pixel data (a report or other non-image object, or a file cut "
                        "short); upload the whole image file", filename)
    photometric = str(ds.get("PhotometricInterpretation", "none"))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise BadUpload(f"DICOM photometric interpretation {photometric}: not a grayscale radiograph; "
                        f"{_ADVICE}", filename)
    if int(ds.get("NumberOfFrames") or 1) > 1:
        raise BadUpload(f"multi-frame DICOM ({ds.NumberOfFrames} frames); upload a single radiograph", filename)
    _check_pixels(filename, int(ds.get("Columns") or 0), int(ds.get("Rows") or 0))
    stored = _stored_pixels(filename, ds)
    notes = ["MONOCHROME1 inverted"] if photometric == "MONOCHROME1" else []
    windowed = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
    # The window wins when the file has both a window and a VOI LUT (as _output_range assumes).
    values = apply_voi_lut(apply_modality_lut(stored, ds), ds, prefer_lut=False)
    notes += _lut_notes(ds, windowed)
    low, high = _output_range(ds, voi_lut=not windowed and bool(ds.get("VOILUTSequence")))
    if not high > low:
        raise BadUpload("DICOM header maps every pixel to one value (Bits Stored or rescale slope 0); export "
                        "the image again", filename)
    pixels = np.clip(np.rint((values - low) * (255.0 / (high - low))), 0, 255).astype(np.uint8)
    if photometric == "MONOCHROME1":  # low values are white: the display inverts after the VOI LUT
        pixels = 255 - pixels
    if (low, high) != (0, 255):
        bits = int(high).bit_length()
        plain = low == 0 and high == 2**bits - 1
        notes.append(f"{bits}-bit scaled to 8-bit" if plain else f"values {low:g}..{high:g} scaled to 8-bit")
    return Radiograph(pixels, f"DICOM {photometric}", "; ".join(notes) or None, _pixel_spacing(ds), filename)


def _stored_pixels(filename: str, ds: Dataset) -> np.ndarray:
    """The stored 2-D pixel values; BadUpload for a compression no installed plugin decodes, or bad data."""
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is not None and syntax.is_compressed:
        try:
            available = get_decoder(syntax).is_available
        except NotImplementedError:  # a transfer syntax pydicom has no decoder for at all
            available = False
        if not available:
            raise BadUpload(f"compressed DICOM ({syntax.name}) that this installation cannot decode; convert "
                            "it to uncompressed DICOM (e.g. gdcmconv --raw in.dcm out.dcm) or PNG and upload "
                            "that", filename)
    try:
        pixels = ds.pixel_array
    except Exception as error:  # truncated or inconsistent pixel data; the decoders raise many kinds
        raise BadUpload(f"DICOM pixel data cannot be decoded ({_first_line(error)}); upload the whole, "
                        "original file", filename) from None
    if pixels.ndim != 2:
        raise BadUpload(f"DICOM pixel data of shape {pixels.shape}: not a single grey image; {_ADVICE}", filename)
    return pixels


def _lut_notes(ds: Dataset, windowed: bool) -> list[str]:
    """What the modality and VOI LUT steps did, in words."""
    notes = []
    if ds.get("ModalityLUTSequence"):
        notes.append("modality LUT applied")
    elif _rescale(ds) not in (None, (1.0, 0.0)):
        notes.append(f"rescale slope {float(ds.RescaleSlope):g} intercept {float(ds.RescaleIntercept):g} applied")
    if windowed:
        # The first window of several is the default view, and the one apply_voi_lut applies.
        center, width = np.ravel(ds.WindowCenter)[0], np.ravel(ds.WindowWidth)[0]
        notes.append(f"window {center:g}/{width:g} applied")
    elif ds.get("VOILUTSequence"):
        notes.append("VOI LUT applied")
    return notes


def _output_range(ds: Dataset, voi_lut: bool) -> tuple[float, float]:
    """The range the LUT steps map into (as pydicom's apply_windowing computes it): a VOI LUT's entry depth,
    else the stored range (Bits Stored, signed or not) through the modality LUT or the rescale."""
    if voi_lut:
        return 0.0, float(2 ** ds.VOILUTSequence[0].LUTDescriptor[2] - 1)
    if ds.get("ModalityLUTSequence"):
        return 0.0, float(2 ** ds.ModalityLUTSequence[0].LUTDescriptor[2] - 1)
    bits = int(ds.BitsStored)
    low, high = (0, 2**bits - 1) if ds.PixelRepresentation == 0 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if (rescale := _rescale(ds)) is not None:
        slope, intercept = rescale
        low, high = sorted((low * slope + intercept, high * slope + intercept))
    return float(low), float(high)


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm from PixelSpacing, else ImagerPixelSpacing, else None."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            if value is not None and len(value) == 2 and float(value[0]) > 0 and float(value[1]) > 0:
                return float(value[0]), float(value[1])
        except (TypeError, ValueError):  # a malformed value: no spacing rather than a refusal
            continue
    return None


def _rescale(ds: Dataset) -> tuple[float, float] | None:
    """(slope, intercept) when both are present: pydicom's modality LUT applies them only then."""
    if ds.get("RescaleSlope") is None or ds.get("RescaleIntercept") is None:
        return None
    return float(ds.RescaleSlope), float(ds.RescaleIntercept)


def _first_line(error: Exception) -> str:
    """An exception's first line: pydicom's messages run to several lines of plugin lists."""
    return (str(error).splitlines() or [type(error).__name__])[0].rstrip(".")
