"""NIH ChestX-ray14: decode every PNG of a tree once, in parallel, into the pixel store.

The CSV, the image folders and the official lists are read by nih_index; this module decodes and
resizes the images on every core, in chunks, through the resumable StoreBuilder, so memory stays
bounded whatever the dataset size and an interrupted prepare resumes where it stopped.
"""

from __future__ import annotations

import os
import signal
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from harness.data.datasets.bad_input import DatasetError
from harness.data.datasets.image_decode import BadImage, decode_grayscale
from harness.data.datasets.nih_boxes import NihBoxes, box_notes, boxes_fingerprint, read_nih_boxes, store_boxes
from harness.data.datasets.nih_index import NIH_LABELS, SKIP_BAD_HINT, NihIndex, index_fingerprint, read_nih_index
from harness.data.pixel_store import PRESET_NONE, PRESET_TEST, PRESET_TRAIN_VAL, DatasetArrays, PixelStore
from harness.data.store_builder import StoreBuilder, finished_store
from harness.progress import progress_bar

# Bump when decoding or resizing changes its output, so stores prepared before are not reused.
DECODER_VERSION = 1
CHUNK_IMAGES = 64  # images per task: big enough to amortise the hand-over, small enough to resume finely


@dataclass(frozen=True)
class PreparedNih:
    """A finished store and what the prepare found on the way."""

    store: PixelStore
    index: NihIndex
    boxes: NihBoxes  # BBox_List_2017.csv as read (in the PNGs' pixels); the store holds them scaled
    reused: bool  # the store was already prepared (nothing decoded this time)


def _ignore_interrupts() -> None:
    """Decoder processes leave Ctrl-C to the parent, which stops them and keeps finished chunks."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import cv2

    cv2.setNumThreads(1)  # one process per core already: more threads would only contend


def decode_chunk(start: int, paths: list[str], wheres: list[str], size: int) -> tuple:
    """Decode `paths` (source rows start, start+1, ...) in a decoder process.

    Returns (start, pixels of the good images in row order, bad rows as (row, where, reason),
    conversions as (row, where, note)).
    """
    images, bad, converted = [], [], []
    for offset, (path, where) in enumerate(zip(paths, wheres, strict=True)):
        try:
            pixels, note = decode_grayscale(Path(path), size)
        except BadImage as error:
            bad.append((start + offset, where, str(error)))
            continue
        except OSError as error:
            bad.append((start + offset, where, f"cannot be read: {error.strerror or error}"))
            continue
        images.append(pixels)
        if note:
            converted.append((start + offset, where, note))
    stacked = np.stack(images) if images else np.zeros((0, size, size), np.uint8)
    return start, stacked, bad, converted


def nih_source(index: NihIndex, image_size: int) -> dict:
    """What keys the store: the dataset's files (as fingerprinted) and every preprocessing parameter.

    The box file's digest is in it only when the file is there, so stores of trees without one keep their key.
    """
    return {"dataset": "nih", "decoder_version": DECODER_VERSION, "image_size": image_size,
            "resize": "cv2 INTER_AREA (shrink) / INTER_LINEAR (enlarge)", **index_fingerprint(index),
            **boxes_fingerprint(index.root)}


def _where(index: NihIndex, row: int) -> str:
    path = index.image_paths[row]
    try:
        return str(path.relative_to(index.root))
    except ValueError:
        return str(path)


def _decode_all(builder: StoreBuilder, index: NihIndex, image_size: int, skip_bad: bool, processes: int) -> None:
    """Decode the rows the builder has not done yet, `processes` at a time, appending in order."""
    total = len(index)
    starts = range(builder.progress.next_row, total, CHUNK_IMAGES)
    window = 2 * processes  # chunks in flight: keeps every core busy while bounding memory
    bar = progress_bar(total=total, initial=builder.progress.next_row, unit="img",
                       desc=f"decoding NIH at {image_size}px", smoothing=0.05)
    executor = ProcessPoolExecutor(processes, mp_context=get_context("spawn"), initializer=_ignore_interrupts)
    pending: deque[Future] = deque()
    try:
        for start in starts:
            stop = min(start + CHUNK_IMAGES, total)
            rows = range(start, stop)
            pending.append(executor.submit(decode_chunk, start, [str(index.image_paths[r]) for r in rows],
                                           [_where(index, r) for r in rows], image_size))
            while len(pending) >= window:
                _take(builder, pending.popleft().result(), index, skip_bad, bar)
        while pending:
            _take(builder, pending.popleft().result(), index, skip_bad, bar)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        bar.close()


def _take(builder: StoreBuilder, result: tuple, index: NihIndex, skip_bad: bool, bar: Any) -> None:
    start, pixels, bad, converted = result
    if bad and not skip_bad:
        row, where, reason = bad[0]
        # Chunks before this one are kept: after fixing the file, the prepare resumes here.
        raise DatasetError(f"{where}: {reason} {SKIP_BAD_HINT}")
    stop = min(start + CHUNK_IMAGES, len(index))
    builder.append(range(start, stop), pixels,
                   [{"row": r, "where": w, "reason": why} for r, w, why in bad],
                   [{"row": r, "where": w, "note": note} for r, w, note in converted])
    bar.update(stop - start)
    if builder.progress.skipped:
        bar.set_postfix(skipped=len(builder.progress.skipped), refresh=False)


def _store_index(index: NihIndex, boxes: NihBoxes, builder: StoreBuilder) -> DatasetArrays:
    """The index of the images that made it into the store, with every fact the report should state."""
    kept = np.asarray(builder.progress.kept, dtype=np.int64)
    if index.official_test is None:
        codes = np.full(len(kept), PRESET_NONE, np.uint8)
    else:
        codes = np.where(index.official_test[kept], PRESET_TEST, PRESET_TRAIN_VAL).astype(np.uint8)
    table, dropped = store_boxes(boxes, kept, builder.image_size)
    skipped = [bad.to_dict() for bad in index.skipped] + [bad.to_dict() for bad in boxes.skipped] + [
        {"where": item["where"], "reason": item["reason"]} for item in builder.progress.skipped]
    notes = {"kind": "NIH ChestX-ray14", **index.notes, **box_notes(boxes, table, dropped, codes, builder.image_size),
             "skipped": skipped,
             "converted": [{"where": item["where"], "note": item["note"]} for item in builder.progress.converted]}
    return DatasetArrays(
        pixels=np.zeros((0,), np.uint8), labels=index.labels[kept], patient_ids=index.patient_ids[kept],
        sample_ids=tuple(index.sample_ids[r] for r in kept), label_names=NIH_LABELS,
        boxes=table, notes=notes, split_codes=codes,
    )


def prepare_nih(
    root: Path, image_size: int, cache: Path, skip_bad: bool = False, processes: int | None = None
) -> PreparedNih:
    """Decode the NIH tree at `root` into the pixel store (or open the one prepared before).

    Stops at the first bad row or file with a DatasetError naming it, unless `skip_bad`, which skips
    and lists every one. Decoding runs in `processes` processes (default: one per core).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder "
                           "(the NIH ChestX-ray14 root holds Data_Entry_2017.csv and the image folders)")
    index = read_nih_index(root, skip_bad=skip_bad)
    if len(index) == 0:
        raise DatasetError(f"{index.csv_path}: no usable row")
    boxes = read_nih_boxes(index, skip_bad=skip_bad)  # before decoding: a bad box row stops the prepare at once
    source = nih_source(index, image_size)
    existing = finished_store(cache, source)
    if existing is not None:
        return PreparedNih(existing, index, boxes, reused=True)
    processes = max(1, processes or os.cpu_count() or 1)
    with StoreBuilder(cache, source, image_size) as builder:
        _decode_all(builder, index, image_size, skip_bad, processes)
        if not builder.progress.kept_count:
            raise DatasetError(f"{root}: every image was bad; nothing to prepare")
        store = builder.finish(_store_index(index, boxes, builder))
    return PreparedNih(store, index, boxes, reused=False)

