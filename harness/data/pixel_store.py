"""The pixel store: decoded uint8 images at the target size, memory-mapped, cached once.

A store lives in `<cache>/stores/<key>/`, where the key is a digest of the dataset source and every
preprocessing parameter, so a changed parameter can never reuse stale pixels. It is built in a
temporary folder and renamed into place when complete, so an interrupted build never leaves a store
that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# A dataset's own split, a column of the store (PixelStore.split_codes): MedMNIST ships train /
# validation / test; NIH ships test and train+validation (its official lists); 0 where a dataset has none.
PRESET_PARTS = ("none", "train", "validation", "test", "train_val")
PRESET_NONE, PRESET_TRAIN, PRESET_VALIDATION, PRESET_TEST, PRESET_TRAIN_VAL = range(len(PRESET_PARTS))

PIXELS_FILE = "pixels.u8"
INDEX_FILE = "index.npz"
META_FILE = "meta.json"


@dataclass(frozen=True)
class DatasetArrays:
    """What a dataset builder returns: pixels and the index that describes them."""

    pixels: np.ndarray  # uint8 (N, S, S)
    labels: np.ndarray  # uint8 (N, L)
    patient_ids: np.ndarray  # int64 (N,)
    sample_ids: tuple[str, ...]
    label_names: tuple[str, ...]
    boxes: np.ndarray  # int32 (M, 6): sample, label, x, y, w, h
    notes: dict  # facts the report should state (e.g. prevalence floors)
    split_codes: np.ndarray | None = None  # uint8 (N,): the dataset's own split, see PRESET_PARTS


@dataclass(frozen=True)
class PixelStore:
    """An opened store: pixels memory-mapped read-only, index in memory."""

    path: Path
    pixels: np.ndarray
    labels: np.ndarray
    patient_ids: np.ndarray
    sample_ids: tuple[str, ...]
    label_names: tuple[str, ...]
    boxes: np.ndarray
    notes: dict
    content_sha256: str  # digest of pixels, labels and patient ids: the run's data digest
    split_codes: np.ndarray  # uint8 (N,): the dataset's own split (0 where it has none)

    @property
    def image_size(self) -> int:
        return int(self.pixels.shape[1])

    def __len__(self) -> int:
        return int(self.pixels.shape[0])


def store_key(source: dict) -> str:
    """Digest of the dataset source and preprocessing parameters (JSON, keys sorted)."""
    return hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:24]


def content_digest(arrays: DatasetArrays | PixelStore) -> str:
    """SHA-256 over pixels, labels and patient ids, in that order: of a dataset being stored, or
    recomputed from an opened store's bytes (PixelStore.content_sha256 is the one recorded when built)."""
    digest = hashlib.sha256()
    for array in (arrays.pixels, arrays.labels, arrays.patient_ids):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def write_index(folder: Path, index: DatasetArrays, source: dict, shape: tuple[int, ...], content_sha256: str) -> None:
    """Write the index and meta of a store whose pixels file is already in `folder`."""
    split_codes = index.split_codes if index.split_codes is not None else np.zeros(shape[0], np.uint8)
    np.savez(
        folder / INDEX_FILE,
        labels=index.labels.astype(np.uint8),
        patient_ids=index.patient_ids.astype(np.int64),
        boxes=index.boxes.astype(np.int32),
        split_codes=split_codes.astype(np.uint8),
    )
    meta = {
        "source": source,
        "shape": list(shape),
        "sample_ids": list(index.sample_ids),
        "label_names": list(index.label_names),
        "notes": index.notes,
        "content_sha256": content_sha256,
    }
    (folder / META_FILE).write_text(json.dumps(meta))


def _write(folder: Path, arrays: DatasetArrays, source: dict) -> None:
    folder.mkdir(parents=True)
    pixels = np.ascontiguousarray(arrays.pixels, dtype=np.uint8)
    pixels.tofile(folder / PIXELS_FILE)
    write_index(folder, arrays, source, pixels.shape, content_digest(arrays))


def open_store(folder: Path) -> PixelStore:
    """Open a finished store folder (pixels memory-mapped read-only)."""
    meta = json.loads((folder / META_FILE).read_text())
    shape = tuple(meta["shape"])
    pixels = np.memmap(folder / PIXELS_FILE, dtype=np.uint8, mode="r", shape=shape)
    with np.load(folder / INDEX_FILE) as index:
        labels, patient_ids, boxes = index["labels"], index["patient_ids"], index["boxes"]
        # Stores written before datasets carried their own split have no codes: all 0 (none).
        split_codes = index["split_codes"] if "split_codes" in index.files else np.zeros(shape[0], np.uint8)
    return PixelStore(
        path=folder,
        pixels=pixels,
        labels=labels,
        patient_ids=patient_ids,
        sample_ids=tuple(meta["sample_ids"]),
        label_names=tuple(meta["label_names"]),
        boxes=boxes,
        notes=meta["notes"],
        content_sha256=meta["content_sha256"],
        split_codes=split_codes,
    )


def open_or_build(cache_root: Path, source: dict, build: Callable[[], DatasetArrays]) -> PixelStore:
    """Open the store for `source`, building it with `build()` if it is not cached yet."""
    final = cache_root / "stores" / store_key(source)
    if not (final / META_FILE).is_file():
        partial = final.with_name(f"{final.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            _write(partial, build(), source)
            try:
                os.rename(partial, final)  # atomic: the store appears complete or not at all
            except OSError:
                if not (final / META_FILE).is_file():  # not a concurrent build that won the race
                    raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return open_store(final)
