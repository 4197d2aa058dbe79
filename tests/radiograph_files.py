"""Sample radiograph files as bytes, the way a person would upload them: PNG (8 or 16 bit), JPEG (grey or
grey saved as RGB), DICOM (MONOCHROME1/2, window, rescale, pixel spacing, with or without pixel data,
compressed), a colour photograph, a file cut short, and a chest-like grey picture to put in them.

Shared by the upload tests (tests/test_uploads.py), the serving and page tests, and the browser test."""

from __future__ import annotations

import hashlib
import io

import cv2
import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid


def chest_like(size: int = 64, seed: int = 0) -> np.ndarray:
    """A plausible grey radiograph, uint8 (size, size), deterministic in (size, seed): a bright body on a
    dark background, two darker lung ovals, a brighter spine and heart, and a little noise."""
    y, x = np.mgrid[0:size, 0:size] / max(size - 1, 1) * 2.0 - 1.0  # -1..1 both ways

    def inside(cx: float, cy: float, a: float, b: float) -> np.ndarray:
        return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1.0

    image = np.full((size, size), 20.0)
    image[inside(0.0, 0.1, 0.85, 1.0)] = 170.0  # body
    image[inside(-0.4, -0.05, 0.3, 0.6) | inside(0.4, -0.05, 0.3, 0.6)] = 70.0  # lungs
    image[inside(0.15, 0.3, 0.25, 0.2)] = 190.0  # heart, toward the patient's left
    image[(np.abs(x) < 0.07) & (y > -0.9)] = 210.0  # spine
    image += np.random.default_rng(seed).normal(0.0, 6.0, (size, size))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def png_bytes(pixels: np.ndarray, bits: int = 8) -> bytes:
    """`pixels` as a PNG: 2-D grey, or 3-D with 3 (RGB) or 4 (RGBA) channels in OpenCV's BGR(A) order.

    bits=16 writes 16-bit samples: uint16 pixels as they are, uint8 pixels times 257 (255 -> 65535)."""
    if bits == 16 and pixels.dtype == np.uint8:
        pixels = pixels.astype(np.uint16) * 257
    expected = np.uint16 if bits == 16 else np.uint8
    assert bits in (8, 16) and pixels.dtype == expected, f"png_bytes: {pixels.dtype} pixels for bits={bits}"
    ok, encoded = cv2.imencode(".png", pixels)
    assert ok
    return encoded.tobytes()


def jpeg_bytes(pixels: np.ndarray, rgb: bool = False, quality: int = 95) -> bytes:
    """2-D uint8 `pixels` as a JPEG: one grey component, or (rgb=True) the same grey in three colour channels
    (stored as YCbCr, so decoding gives channels that differ by a grey level or two)."""
    image = cv2.merge([pixels, pixels, pixels]) if rgb else pixels
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return encoded.tobytes()


def colour_photo_png(size: int = 64) -> bytes:
    """A colour photograph: red, green and blue gradients that clearly differ."""
    ramp = np.linspace(0, 255, size, dtype=np.float64)
    blue = np.tile(ramp, (size, 1))
    green = blue.T
    red = 255.0 - blue
    return png_bytes(np.rint(np.dstack([blue, green, red])).astype(np.uint8))


def truncated(data: bytes) -> bytes:
    """The first two thirds of `data`: a file cut off in transfer (no PNG IEND chunk, no JPEG EOI marker)."""
    return data[: len(data) * 2 // 3]


def dicom_dataset(
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
    spacing: tuple[float, float] | None = (0.143, 0.143),
    with_pixels: bool = True,
    bits: int = 16,
    imager_spacing: tuple[float, float] | None = None,
) -> FileDataset:
    """A Digital X-Ray (for presentation) dataset, Explicit VR Little Endian, holding 2-D `pixels` as they
    are (unsigned, `bits` stored in 8- or 16-bit samples). window = (center, width); rescale = (slope,
    intercept); spacing = PixelSpacing (row, column) in mm; imager_spacing = ImagerPixelSpacing."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    # Deterministic UIDs: the same pixels and settings give the same file.
    entropy = [hashlib.sha256(pixels.tobytes()).hexdigest(), photometric, str(window), str(rescale)]
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=entropy)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[*entropy, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[*entropy, "series"])
    ds.Modality = "DX"
    ds.PatientID = "PHANTOM-0001"
    ds.PatientName = "Phantom^Chest"
    samples = pixels.astype(np.uint8 if bits <= 8 else np.uint16)
    ds.set_pixel_data(samples, photometric, bits, generate_instance_uid=False)
    if not with_pixels:
        del ds.PixelData
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
        ds.RescaleType = "US"
    if spacing is not None:
        ds.PixelSpacing = list(spacing)
    if imager_spacing is not None:
        ds.ImagerPixelSpacing = list(imager_spacing)
    return ds


def dicom_bytes(
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
    spacing: tuple[float, float] | None = (0.143, 0.143),
    with_pixels: bool = True,
    bits: int = 16,
) -> bytes:
    """A DICOM Part 10 file (preamble, "DICM", file meta) of `dicom_dataset`'s dataset."""
    return dataset_bytes(dicom_dataset(pixels, photometric, window, rescale, spacing, with_pixels, bits))


def dataset_bytes(ds: FileDataset) -> bytes:
    """`ds` written as a DICOM Part 10 file."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def dicom_with_transfer_syntax(pixels: np.ndarray, transfer_syntax: UID, frame: bytes) -> bytes:
    """A DICOM file that claims compressed (encapsulated) pixel data in `transfer_syntax`, holding `frame` as
    its one compressed frame as given (a decoder that exists would decode it; one that is missing cannot)."""
    ds = dicom_dataset(pixels)
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    return dataset_bytes(ds)
