"""decode_upload and model_input: what each kind of upload decodes to (pixels checked against hand-computed
values), what is refused and why (the message names the file), and the training data's resizing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pydicom.pixels import get_decoder
from pydicom.uid import JPEGLSLossless, RLELossless
from radiograph_files import (
    chest_like,
    colour_photo_png,
    dataset_bytes,
    dicom_bytes,
    dicom_dataset,
    dicom_with_transfer_syntax,
    jpeg_bytes,
    png_bytes,
    truncated,
)

from harness.data.datasets.phantom import PhantomConfig, generate_phantom
from harness.data.uploads import MAX_UPLOAD_BYTES, BadUpload, Radiograph, decode_upload, model_input

# Every value of a 12-bit detector's range that the tests look at, stored in 16-bit samples.
TWELVE_BIT = np.array([[0, 1, 8, 9, 2047, 2048, 4086, 4087, 4095]], np.uint16)


def refused(filename: str, data: bytes, **options) -> str:
    """The refusal message for uploading `data` as `filename`; it must start with the file's name."""
    with pytest.raises(BadUpload) as caught:
        decode_upload(filename, data, **options)
    message = str(caught.value)
    assert message.startswith(f"{filename}: "), message
    assert caught.value.filename == filename and message == f"{filename}: {caught.value.reason}"
    return message


def jpeg_decoded(data: bytes) -> np.ndarray:
    """What libjpeg (through OpenCV) decodes `data` to, channels as stored."""
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


# --- accepted: PNG -------------------------------------------------------------------------------


def test_8bit_png_at_the_store_size_round_trips_byte_identical():
    # A phantom image exactly as the pixel store holds it (uint8, 48 x 48) is what the model reads.
    stored = generate_phantom(PhantomConfig(seed=5, patients=1, image_size=48)).pixels[0]
    radiograph = decode_upload("phantom.png", png_bytes(stored))
    assert (radiograph.source, radiograph.note, radiograph.pixel_spacing_mm) == ("PNG 8-bit grayscale", None, None)
    image = model_input(radiograph, 48)
    assert image.dtype == np.uint8 and image.shape == (48, 48) and image.flags.c_contiguous
    assert image.tobytes() == stored.tobytes()


def test_model_input_shrinks_with_inter_area_like_the_training_data():
    pixels = chest_like(96, seed=1)
    image = model_input(decode_upload("big.png", png_bytes(pixels)), 48)
    assert image.tobytes() == cv2.resize(pixels, (48, 48), interpolation=cv2.INTER_AREA).tobytes()


def test_16bit_png_is_scaled_v_over_257_with_a_note():
    values = np.array([[0, 128, 129, 257, 385, 386, 32896, 65406, 65407, 65535]], np.uint16)
    radiograph = decode_upload("deep.png", png_bytes(values, bits=16))
    assert radiograph.source == "PNG 16-bit grayscale" and radiograph.note == "16-bit grayscale scaled to 8-bit"
    assert radiograph.pixels.tolist() == [[0, 0, 1, 1, 1, 2, 128, 254, 255, 255]]


def test_rgb_png_with_equal_channels_is_grey():
    pixels = chest_like(32, seed=2)
    radiograph = decode_upload("rgb.png", png_bytes(cv2.merge([pixels] * 3)))
    assert radiograph.source == "PNG 8-bit RGB"
    assert radiograph.note == "RGB with identical channels converted to grayscale"
    assert radiograph.pixels.tobytes() == pixels.tobytes()


def test_rgba_png_with_opaque_alpha_is_grey():
    pixels = chest_like(32, seed=3)
    radiograph = decode_upload("rgba.png", png_bytes(cv2.merge([pixels] * 3 + [np.full_like(pixels, 255)])))
    assert radiograph.source == "PNG 8-bit RGBA"
    assert radiograph.note == "RGBA with identical channels and opaque alpha converted to grayscale"
    assert radiograph.pixels.tobytes() == pixels.tobytes()


# --- accepted: JPEG ------------------------------------------------------------------------------


def test_grey_jpeg_is_taken_as_decoded():
    data = jpeg_bytes(chest_like(32, seed=4))
    radiograph = decode_upload("chest.jpg", data)
    assert (radiograph.source, radiograph.note) == ("JPEG grayscale", None)
    assert radiograph.pixels.tobytes() == jpeg_decoded(data).tobytes()


def test_grey_saved_as_rgb_jpeg_is_grey():
    pixels = chest_like(32, seed=5)
    data = jpeg_bytes(pixels, rgb=True)
    assert jpeg_decoded(data).shape == (32, 32, 3)
    radiograph = decode_upload("chest.jpg", data)
    assert (radiograph.source, radiograph.note) == ("JPEG RGB", "RGB with identical channels converted to grayscale")
    assert radiograph.pixels.tobytes() == jpeg_decoded(data)[:, :, 0].tobytes()


def test_rgb_jpeg_with_channels_two_levels_apart_is_averaged():
    # Red two levels above grey, as some encoders' colour rounding leaves it: decoded 0..2 levels apart.
    pixels = chest_like(32, seed=6)
    ok, encoded = cv2.imencode(".jpg", cv2.merge([pixels, pixels, cv2.add(pixels, 2)]), [cv2.IMWRITE_JPEG_QUALITY, 95])
    decoded = jpeg_decoded(encoded.tobytes()).astype(np.int64)
    assert ok and (decoded.max(axis=2) - decoded.min(axis=2)).max() == 2
    radiograph = decode_upload("tinted.jpg", encoded.tobytes())
    assert radiograph.note == ("RGB with channels at most 2 grey levels apart (JPEG colour rounding) "
                               "averaged to grayscale")
    assert np.array_equal(radiograph.pixels, np.rint(decoded.mean(axis=2)).astype(np.uint8))


# --- accepted: DICOM -----------------------------------------------------------------------------


def test_dicom_monochrome2_12_bit_is_scaled_to_8_bit_with_spacing():
    radiograph = decode_upload("chest.dcm", dicom_bytes(TWELVE_BIT, bits=12))
    assert (radiograph.source, radiograph.note) == ("DICOM MONOCHROME2", "12-bit scaled to 8-bit")
    # round(v * 255 / 4095): 8 -> 0.498 -> 0, 9 -> 0.560 -> 1, 2047 -> 127.47, 2048 -> 127.53, 4086 -> 254.44
    assert radiograph.pixels.tolist() == [[0, 0, 0, 1, 127, 128, 254, 255, 255]]
    assert radiograph.pixel_spacing_mm == (0.143, 0.143)


def test_dicom_8_bit_monochrome2_comes_back_unchanged():
    pixels = chest_like(32, seed=7)
    radiograph = decode_upload("chest.dcm", dicom_bytes(pixels, bits=8))
    assert (radiograph.source, radiograph.note) == ("DICOM MONOCHROME2", None)
    assert radiograph.pixels.tobytes() == pixels.tobytes()


def test_dicom_monochrome1_is_inverted():
    pixels = np.array([[0, 1, 100, 254, 255]], np.uint8)
    radiograph = decode_upload("inverse.dcm", dicom_bytes(pixels, photometric="MONOCHROME1", bits=8))
    assert (radiograph.source, radiograph.note) == ("DICOM MONOCHROME1", "MONOCHROME1 inverted")
    assert radiograph.pixels.tolist() == [[255, 254, 155, 1, 0]]


def test_dicom_window_is_applied_by_the_standard_linear_function():
    # PS3.3 C.11.2.1.2.1, center 128 width 101 on 0..255: x <= 77.5 -> 0, x > 177.5 -> 255, else
    # ((x - 127.5) / 100 + 0.5) * 255: 78 -> 1.275, 100 -> 57.375, 128 -> 128.775, 150 -> 184.875, 177 -> 253.725
    pixels = np.array([[0, 77, 78, 100, 128, 150, 177, 178, 255]], np.uint8)
    radiograph = decode_upload("window.dcm", dicom_bytes(pixels, window=(128, 101), bits=8))
    assert radiograph.note == "window 128/101 applied"
    assert radiograph.pixels.tolist() == [[0, 0, 1, 57, 129, 185, 254, 255, 255]]


def test_dicom_with_several_windows_applies_the_first():
    pixels = np.array([[0, 77, 78, 100, 128, 150, 177, 178, 255]], np.uint8)
    ds = dicom_dataset(pixels, bits=8)
    ds.WindowCenter, ds.WindowWidth = [128, 40], [101, 400]
    radiograph = decode_upload("windows.dcm", dataset_bytes(ds))
    assert radiograph.note == "window 128/101 applied"
    assert radiograph.pixels.tolist() == [[0, 0, 1, 57, 129, 185, 254, 255, 255]]


def test_dicom_negative_rescale_slope_is_applied():
    pixels = np.array([[0, 1, 100, 255]], np.uint8)
    radiograph = decode_upload("rescale.dcm", dicom_bytes(pixels, rescale=(-1, 255), bits=8))
    assert radiograph.note == "rescale slope -1 intercept 255 applied"
    assert radiograph.pixels.tolist() == [[255, 254, 155, 0]]


def test_dicom_rescale_then_window_then_monochrome1_inversion():
    # Stored x -> x - 1024 (Hounsfield-like units); window 40/400: HU <= -160 -> low, HU > 239 -> high,
    # else ((HU - 39.5) / 399 + 0.5) of the range; scaled to 0..255, then inverted.
    hu = np.array([-1024, -160, -100, 40, 239, 3071])
    stored = (hu + 1024).astype(np.uint16)[None, :]
    data = dicom_bytes(stored, photometric="MONOCHROME1", window=(40, 400), rescale=(1, -1024), bits=12)
    radiograph = decode_upload("ct-like.dcm", data)
    assert radiograph.note == ("MONOCHROME1 inverted; rescale slope 1 intercept -1024 applied; window 40/400 applied; "
                               "values -1024..3071 scaled to 8-bit")
    # -100 -> (-139.5 / 399 + 0.5) * 255 = 38.35 -> 38 -> 217; 40 -> 127.82 -> 128 -> 127
    assert radiograph.pixels.tolist() == [[255, 255, 217, 127, 0, 0]]


def test_rle_compressed_dicom_decodes_to_the_stored_pixels():
    pixels = chest_like(32, seed=8)
    ds = dicom_dataset(pixels, bits=8)
    ds.compress(RLELossless)  # pydicom's own encoder and decoder: no plugin needed
    radiograph = decode_upload("rle.dcm", dataset_bytes(ds))
    assert radiograph.pixels.tobytes() == pixels.tobytes()


def test_pixel_spacing_falls_back_to_imager_pixel_spacing_then_none():
    pixels = chest_like(16, seed=9)
    assert decode_upload("a.dcm", dicom_bytes(pixels, spacing=(0.2, 0.1))).pixel_spacing_mm == (0.2, 0.1)
    imager = dataset_bytes(dicom_dataset(pixels, spacing=None, imager_spacing=(0.15, 0.16)))
    assert decode_upload("b.dcm", imager).pixel_spacing_mm == (0.15, 0.16)
    assert decode_upload("c.dcm", dicom_bytes(pixels, spacing=None)).pixel_spacing_mm is None


# --- refused -------------------------------------------------------------------------------------


def test_empty_file_is_refused():
    assert "empty file (0 bytes)" in refused("chest.png", b"")


def test_file_over_the_size_limit_is_refused_saying_the_limit_in_mb():
    assert MAX_UPLOAD_BYTES == 50 * 1024 * 1024
    message = refused("huge.png", png_bytes(chest_like(16)) + b"\0" * 2**21, max_bytes=2**21)
    assert "file too large (2.0 MB; the limit is 2 MB)" in message


@pytest.mark.parametrize(("name", "data", "kind"), [
    ("noise.png", np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes(), "it starts with neither"),
    ("notes.png", "Patient: phantom\nFindings: none — normal chest\n".encode(), "a text file"),
    ("report.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "a PDF document"),
])
def test_bytes_that_are_not_an_image_are_refused(name, data, kind):
    message = refused(name, data)
    assert f"not an image ({kind}" in message and "PNG, JPEG or DICOM" in message


def test_a_dcm_file_without_the_dicom_preamble_is_refused():
    raw = dicom_bytes(chest_like(16))[132:]  # the data set without preamble and "DICM"
    assert "not a DICOM Part 10 file (no 'DICM' marker" in refused("raw.dcm", raw)


def test_truncated_png_is_refused():
    data = truncated(png_bytes(chest_like(64, seed=10)))
    message = refused("chest.png", data)
    assert f"truncated PNG ({len(data):,} bytes, no IEND chunk at the end); upload the whole file" in message


def test_truncated_jpeg_is_refused():
    data = truncated(jpeg_bytes(chest_like(64, seed=11)))
    message = refused("chest.jpg", data)
    assert f"truncated JPEG ({len(data):,} bytes, no end-of-image marker FF D9 at the end); upload the whole" in message


def test_truncated_dicom_is_refused():
    message = refused("chest.dcm", truncated(dicom_bytes(chest_like(64, seed=12))))
    assert "DICOM pixel data cannot be decoded" in message and "upload the whole" in message


def test_corrupt_png_is_refused():
    good = png_bytes(chest_like(32, seed=13))
    corrupt = good[:40] + bytes(len(good) - 52) + good[-12:]  # signature, IHDR start, zeros, IEND
    assert "corrupt PNG" in refused("chest.png", corrupt)


def test_colour_photograph_png_is_refused():
    assert "colour image (channels differ): not a grayscale radiograph" in refused("holiday.png", colour_photo_png())


def test_colour_photograph_jpeg_is_refused():
    photo = cv2.imdecode(np.frombuffer(colour_photo_png(), np.uint8), cv2.IMREAD_UNCHANGED)
    ok, encoded = cv2.imencode(".jpg", photo)
    message = refused("holiday.jpg", encoded.tobytes())
    assert "colour image (channels differ by up to" in message and "not a grayscale radiograph" in message


def test_png_with_transparent_alpha_is_refused():
    pixels = chest_like(32, seed=14)
    alpha = np.full_like(pixels, 255)
    alpha[0, 0] = 254
    assert "alpha channel is not fully opaque" in refused("cutout.png", png_bytes(cv2.merge([pixels] * 3 + [alpha])))


def test_png_claiming_a_huge_size_is_refused_before_decoding():
    data = bytearray(png_bytes(chest_like(16)))
    data[16:24] = (40_000).to_bytes(4, "big") * 2  # IHDR width and height
    assert "image too large (40,000 x 40,000 px; the limit is 50 megapixels)" in refused("bomb.png", bytes(data))


def test_jpeg_claiming_a_huge_size_is_refused_before_decoding():
    data = bytearray(jpeg_bytes(chest_like(16)))
    frame = data.index(b"\xff\xc0")  # baseline start of frame: length, precision, height, width
    data[frame + 5:frame + 9] = (30_000).to_bytes(2, "big") + (20_000).to_bytes(2, "big")
    assert "image too large (20,000 x 30,000 px; the limit is 50 megapixels)" in refused("bomb.jpg", bytes(data))


@pytest.mark.filterwarnings("ignore:Expected explicit VR")  # pydicom notes the odd file while reading it
def test_malformed_dicom_is_refused():
    ds = dicom_dataset(chest_like(16))
    ds.file_meta.TransferSyntaxUID = "1.2.3.4"  # a UID that is no transfer syntax
    message = refused("odd.dcm", dataset_bytes(ds))
    assert message.startswith("odd.dcm: malformed DICOM file (") and message.endswith("upload the whole, original file")


def test_image_smaller_than_the_model_input_is_refused():
    radiograph = decode_upload("tiny.png", png_bytes(chest_like(40)[:, :30]))
    with pytest.raises(BadUpload) as caught:
        model_input(radiograph, 48)
    assert str(caught.value) == ("tiny.png: too small: 30 x 40 px; this model reads 48 x 48 px images; "
                                 "upload the radiograph at full resolution")


def test_model_input_without_a_file_name_says_only_the_reason():
    radiograph = Radiograph(np.zeros((10, 10), np.uint8), "PNG 8-bit grayscale", None, None)
    with pytest.raises(BadUpload, match=r"^too small: 10 x 10 px"):
        model_input(radiograph, 48)


def test_dicom_without_pixel_data_is_refused():
    message = refused("report.dcm", dicom_bytes(chest_like(16), with_pixels=False))
    assert "DICOM file without pixel data" in message


def test_dicom_in_a_compression_without_a_decoder_is_refused_clearly():
    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS plugin is installed here: this DICOM would be decoded")
    data = dicom_with_transfer_syntax(chest_like(16), JPEGLSLossless, b"\xff\xd8\xff\xf7 not decoded")
    message = refused("compressed.dcm", data)
    assert "compressed DICOM (JPEG-LS Lossless Image Compression) that this installation cannot decode" in message
    assert "uncompressed DICOM" in message


def test_colour_dicom_is_refused():
    ds = dicom_dataset(chest_like(16), bits=8)
    ds.set_pixel_data(np.zeros((16, 16, 3), np.uint8), "RGB", 8)
    message = refused("colour.dcm", dataset_bytes(ds))
    assert "DICOM photometric interpretation RGB: not a grayscale radiograph" in message
