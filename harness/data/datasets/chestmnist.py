"""ChestMNIST (MedMNIST): the `.npz` files at 28, 64, 128 or 224 pixels, with their own split.

The arrays are streamed out of the zip member by member and chunk by chunk, so even the 224-pixel
file (5.6 GB of pixels) is copied into the pixel store in bounded memory. MedMNIST carries no
patient ids: every image counts as its own patient, and the report says so.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from harness.data.datasets.bad_input import DatasetError
from harness.data.datasets.image_decode import resize_square
from harness.data.datasets.labels import CHESTXRAY14_LABELS
from harness.data.pixel_store import PRESET_TEST, PRESET_TRAIN, PRESET_VALIDATION, DatasetArrays, PixelStore
from harness.data.store_builder import StoreBuilder, finished_store
from harness.progress import progress_bar

FILE_NAMES = {28: "chestmnist.npz", 64: "chestmnist_64.npz", 128: "chestmnist_128.npz", 224: "chestmnist_224.npz"}
PARTS = (("train", PRESET_TRAIN), ("val", PRESET_VALIDATION), ("test", PRESET_TEST))
CHUNK_IMAGES = 2048
NO_PATIENT_IDS = ("ChestMNIST carries no patient ids: every image counts as its own patient, so images of one "
                  "patient may sit on both sides of a split or fold (MedMNIST's own split is used where possible)")
NO_BOXES = "ChestMNIST has no bounding boxes: localisation is not scored"


def resolve_file(path: Path, image_size: int) -> Path:
    """The .npz to read: `path` itself, or in a folder the file whose size is nearest above `image_size`."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise DatasetError(f"{path}: no such file or folder "
                           "(expected a MedMNIST chestmnist*.npz file or a folder of them)")
    present = {size: path / name for size, name in FILE_NAMES.items() if (path / name).is_file()}
    if not present:
        raise DatasetError(f"{path}: no ChestMNIST file (looked for {', '.join(FILE_NAMES.values())})")
    larger = [size for size in present if size >= image_size]
    return present[min(larger) if larger else max(present)]


def _member(archive: zipfile.ZipFile, key: str, path: Path):
    """An open array member of the npz and its (shape, dtype), read from the .npy header."""
    try:
        handle = archive.open(f"{key}.npy")
    except KeyError:
        found = sorted(name.removesuffix(".npy") for name in archive.namelist())
        raise DatasetError(f"{path.name}: no array '{key}' (found: {', '.join(found)})") from None
    version = np.lib.format.read_magic(handle)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(handle)
    if fortran:
        raise DatasetError(f"{path.name}: '{key}' is stored in Fortran order; re-save it with np.savez")
    return handle, shape, dtype


def _labels(archive: zipfile.ZipFile, part: str, path: Path, count: int) -> np.ndarray:
    handle, shape, dtype = _member(archive, f"{part}_labels", path)
    with handle:
        labels = np.frombuffer(handle.read(), dtype=dtype).reshape(shape)
    if labels.shape != (count, len(CHESTXRAY14_LABELS)):
        raise DatasetError(f"{path.name}: '{part}_labels' has shape {labels.shape}, "
                           f"expected ({count}, {len(CHESTXRAY14_LABELS)})")
    bad = np.flatnonzero(~np.isin(labels, (0, 1)).all(axis=1))
    if len(bad):
        raise DatasetError(f"{path.name}: row {bad[0]:,} of '{part}_labels' holds {labels[bad[0]].tolist()}; "
                           "labels must be 0 or 1")
    return labels.astype(np.uint8)


def _image_shape(shape: tuple, part: str, path: Path) -> tuple[int, int]:
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3 or shape[1] != shape[2]:
        raise DatasetError(f"{path.name}: '{part}_images' has shape {shape}; expected (N, S, S) grayscale images")
    return shape[0], shape[1]


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """The images at size x size, resized exactly as NIH images are (image_decode.resize_square)."""
    if images.shape[1] == size:
        return images
    return np.stack([resize_square(image, size) for image in images])


def load_chestmnist(path: Path, image_size: int, cache: Path) -> PixelStore:
    """Open the pixel store of a ChestMNIST file at `image_size`, copying it in on first use."""
    npz = resolve_file(path, image_size)
    stat = npz.stat()
    source = {"dataset": "chestmnist", "file": npz.name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
              "image_size": image_size, "resize": "cv2 INTER_AREA (shrink) / INTER_LINEAR (enlarge)"}
    existing = finished_store(cache, source)
    if existing is not None:
        return existing
    try:
        archive = zipfile.ZipFile(npz)
    except (zipfile.BadZipFile, OSError) as error:
        raise DatasetError(f"{npz}: not a readable .npz file ({error})") from None
    with archive, StoreBuilder(cache, source, image_size) as builder:
        labels, codes, native = [], [], None
        row = 0
        for part, code in PARTS:
            handle, shape, dtype = _member(archive, f"{part}_images", npz)
            count, native = _image_shape(shape, part, npz)
            if dtype != np.uint8:
                raise DatasetError(f"{npz.name}: '{part}_images' is {dtype}; expected uint8")
            labels.append(_labels(archive, part, npz, count))
            codes.append(np.full(count, code, np.uint8))
            with handle, progress_bar(total=count, desc=f"ChestMNIST {part} -> {image_size}px", unit="img",
                                      leave=False) as bar:
                for start in range(0, count, CHUNK_IMAGES):
                    n = min(CHUNK_IMAGES, count - start)
                    raw = handle.read(n * native * native)
                    if start + n + row <= builder.progress.next_row:
                        continue  # done before an interruption
                    images = np.frombuffer(raw, np.uint8).reshape(n, native, native)
                    builder.append(range(row + start, row + start + n), _resize(images, image_size), [], [])
                    bar.update(n)
            row += count
        notes = {"kind": "ChestMNIST (MedMNIST)", "file": npz.name, "native_size": native,
                 "no_patient_ids": NO_PATIENT_IDS, "bounding_boxes": NO_BOXES}
        if native != image_size:
            notes["resized"] = f"resized from {native}x{native} to {image_size}x{image_size}"
        sample_ids = tuple(f"{part}/{i:06d}" for (part, _), part_labels in zip(PARTS, labels, strict=True)
                           for i in range(len(part_labels)))
        index = DatasetArrays(
            pixels=np.zeros((0,), np.uint8), labels=np.concatenate(labels), patient_ids=np.arange(row, dtype=np.int64),
            sample_ids=sample_ids, label_names=CHESTXRAY14_LABELS, boxes=np.zeros((0, 6), np.int32), notes=notes,
            split_codes=np.concatenate(codes),
        )
        return builder.finish(index)
