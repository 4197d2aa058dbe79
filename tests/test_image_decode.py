"""decode_grayscale: what it converts (and says so), what it refuses (and why), how it resizes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from harness.data.datasets import image_decode
from harness.data.datasets.image_decode import BadImage, decode_grayscale, to_grayscale_u8


def write_png(path: Path, pixels: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), pixels)
    return path


def gray(size: int = 32, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    high = 256 if dtype == np.uint8 else 65536
    return np.random.default_rng(seed).integers(0, high, (size, size), dtype=dtype)


def refused(path: Path, size: int = 32) -> str:
    with pytest.raises(BadImage) as caught:
        decode_grayscale(path, size)
    assert str(path) not in str(caught.value)  # the caller names the file, not BadImage
    return caught.value.reason


# --- what comes back -------------------------------------------------------------------------


def test_8bit_gray_at_target_size_comes_back_byte_identical_with_no_note(tmp_path):
    pixels = gray(32)
    out, note = decode_grayscale(write_png(tmp_path / "g.png", pixels), 32)
    assert note is None
    assert out.dtype == np.uint8 and out.shape == (32, 32) and out.flags.c_contiguous
    assert out.tobytes() == pixels.tobytes()


def test_shrinking_uses_inter_area(tmp_path):
    pixels = gray(64, seed=1)
    out, _ = decode_grayscale(write_png(tmp_path / "g.png", pixels), 24)
    assert out.tobytes() == cv2.resize(pixels, (24, 24), interpolation=cv2.INTER_AREA).tobytes()
    assert out.tobytes() != cv2.resize(pixels, (24, 24), interpolation=cv2.INTER_LINEAR).tobytes()


def test_enlarging_uses_inter_linear(tmp_path):
    pixels = gray(32, seed=2)
    out, _ = decode_grayscale(write_png(tmp_path / "g.png", pixels), 48)
    assert out.tobytes() == cv2.resize(pixels, (48, 48), interpolation=cv2.INTER_LINEAR).tobytes()


def test_non_square_source_is_resized_to_a_contiguous_square(tmp_path):
    pixels = np.random.default_rng(3).integers(0, 256, (40, 64), dtype=np.uint8)
    out, note = decode_grayscale(write_png(tmp_path / "g.png", pixels), 32)
    assert out.shape == (32, 32) and out.flags.c_contiguous and note is None
    assert out.tobytes() == cv2.resize(pixels, (32, 32), interpolation=cv2.INTER_AREA).tobytes()


def test_16bit_gray_is_rounded_v_over_257_with_a_note(tmp_path):
    values = np.array([0, 128, 129, 257, 385, 386, 32896, 65406, 65407, 65535], np.uint16)
    expected = np.array([0, 0, 1, 1, 1, 2, 128, 254, 255, 255], np.uint8)
    pixels = np.tile(values, (10, 1))
    out, note = decode_grayscale(write_png(tmp_path / "g16.png", pixels), 10)
    assert note == "16-bit grayscale scaled to 8-bit"
    assert out.tobytes() == np.tile(expected, (10, 1)).tobytes()


def test_16bit_conversion_equals_integer_rounding_for_all_65536_values(tmp_path):
    every = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    out, _ = decode_grayscale(write_png(tmp_path / "all.png", every), 256)
    exact = ((every.astype(np.uint32) + 128) // 257).astype(np.uint8)
    assert np.array_equal(out, exact)


def test_rgb_with_identical_channels_becomes_gray_with_a_note(tmp_path):
    pixels = gray(32, seed=4)
    out, note = decode_grayscale(write_png(tmp_path / "rgb.png", np.dstack([pixels] * 3)), 32)
    assert note == "RGB with identical channels converted to grayscale"
    assert out.tobytes() == pixels.tobytes()


def test_rgba_with_identical_channels_and_opaque_alpha_becomes_gray(tmp_path):
    pixels = gray(32, seed=5)
    rgba = np.dstack([pixels] * 3 + [np.full_like(pixels, 255)])
    out, note = decode_grayscale(write_png(tmp_path / "rgba.png", rgba), 32)
    assert note == "RGBA with identical channels and opaque alpha converted to grayscale"
    assert out.tobytes() == pixels.tobytes()


def test_16bit_rgba_opaque_is_converted_and_scaled(tmp_path):
    pixels = np.tile(np.array([65535, 257, 0, 514], np.uint16), (4, 1))
    rgba = np.dstack([pixels] * 3 + [np.full_like(pixels, 65535)])
    out, note = decode_grayscale(write_png(tmp_path / "rgba16.png", rgba), 4)
    assert note == "RGBA with identical channels and opaque alpha converted to grayscale; 16-bit scaled to 8-bit"
    assert out.tolist() == [[255, 1, 0, 2]] * 4


# --- what is refused -------------------------------------------------------------------------


def test_rgb_whose_channels_differ_in_one_pixel_is_refused(tmp_path):
    pixels = gray(32, seed=6)
    rgb = np.dstack([pixels] * 3)
    rgb[17, 9, 2] ^= 1
    assert refused(write_png(tmp_path / "colour.png", rgb)) == "colour image (channels differ): not a grayscale radiograph"


def test_rgba_with_one_translucent_pixel_is_refused(tmp_path):
    pixels = gray(32, seed=7)
    alpha = np.full_like(pixels, 255)
    alpha[3, 4] = 254
    reason = refused(write_png(tmp_path / "t.png", np.dstack([pixels] * 3 + [alpha])))
    assert reason.startswith("alpha channel is not fully opaque")


def test_16bit_rgba_needs_alpha_65535_to_count_as_opaque(tmp_path):
    pixels = gray(8, seed=8, dtype=np.uint16)
    rgba = np.dstack([pixels] * 3 + [np.full_like(pixels, 255)])  # opaque only if it were 8-bit
    assert refused(write_png(tmp_path / "t16.png", rgba), 8).startswith("alpha channel is not fully opaque")


def test_empty_file_is_refused(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    assert refused(tmp_path / "empty.png") == "empty file (0 bytes); replace it with the original PNG"


def test_jpeg_is_refused_as_not_a_png(tmp_path):
    ok, jpeg = cv2.imencode(".jpg", gray(32))
    (tmp_path / "x.png").write_bytes(jpeg.tobytes())
    assert refused(tmp_path / "x.png") == "not a PNG (the file does not start with the PNG signature)"


def test_truncated_png_is_refused_before_libpng_sees_it(tmp_path, monkeypatch):
    data = write_png(tmp_path / "g.png", gray(32)).read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:-100])

    def must_not_decode(*args, **kwargs):
        raise AssertionError("a truncated file reached cv2.imdecode")

    monkeypatch.setattr(image_decode.cv2, "imdecode", must_not_decode)
    reason = refused(tmp_path / "cut.png")
    assert reason == f"truncated PNG ({len(data) - 100:,} bytes, no IEND chunk at the end); unpack or download it again"


def test_png_with_garbage_in_the_middle_is_refused_as_corrupt(tmp_path):
    data = write_png(tmp_path / "g.png", gray(64)).read_bytes()
    middle = len(data) // 2
    corrupt = data[:middle] + b"garbage!" * 8 + data[middle + 64 :]
    assert corrupt.startswith(image_decode.PNG_SIGNATURE) and corrupt.endswith(image_decode.PNG_IEND)
    (tmp_path / "bad.png").write_bytes(corrupt)
    assert refused(tmp_path / "bad.png", 64) == "corrupt PNG: OpenCV cannot decode it; replace the file"


def test_other_pixel_types_and_channel_counts_are_refused():
    with pytest.raises(BadImage, match=r"^unsupported pixel type float32 \(expected 8- or 16-bit\)$"):
        to_grayscale_u8(np.zeros((4, 4), np.float32))
    with pytest.raises(BadImage, match=r"^unsupported image with 2 channels"):
        to_grayscale_u8(np.zeros((4, 4, 2), np.uint8))
