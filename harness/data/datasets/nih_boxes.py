"""NIH's bounding boxes (`BBox_List_2017.csv`): read, checked, and scaled to the stored images.

One job: the box file of an NIH tree -> `NihBoxes` (boxes in the PNGs' own pixels, as written), and
`NihBoxes` -> the pixel store's int32 boxes (sample, label, x, y, w, h) at the stored size. The file
sits beside `Data_Entry_2017.csv` (the root of the tree); without it a tree has no boxes.

What it accepts (the file as NIH publishes it: 984 boxes on 880 images, 8 findings)
    - the header `Image Index,Finding Label,Bbox [x,y,w,h]` (the bracketed name spans four fields),
      with or without trailing empty columns (the real file's header ends in `,,,`), and rows of
      six fields, likewise followed by any number of empty ones;
    - findings spelled as in Data_Entry_2017.csv, and `Infiltrate`, this file's name for Infiltration;
    - x, y, w, h as decimal numbers in pixels of the PNG on disk (1024x1024 in the real release).

Every bad row names this file, its line and the field, and stops the read (or, with skip_bad, is
dropped and listed): a finding that is not one of the 14, a number that is not a finite number, an
image with no usable row in the index, a box not inside its image (x < 0, y < 0, w <= 0, h <= 0,
x + w beyond the width, y + h beyond the height). The image's size is read from its PNG header (the
IHDR chunk), not from the CSV's OriginalImage[Width,Height] columns: those give the size of the
scan before NIH resized it to 1024x1024 (e.g. 2682x2749), not the image the boxes are drawn on.

Scaling (`store_boxes`): the store resizes each PNG of width W and height H to a square S x S
(`image_decode.resize_square`: no crop, no padding, aspect not kept), so a column x of the PNG
becomes x * S / W and a row y becomes y * S / H. A box covers the stored pixels it touches:
    x0 = floor(x * S / W),  x1 = ceil((x + w) * S / W),  clipped to [0, S],  w' = max(x1 - x0, 1),
and the same for y, h with H. Boxes are stored sorted by sample, then label, then file order. A box
whose image is in the index but not in the store (its PNG could not be decoded and was skipped) is
dropped and counted in the notes, never silently.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.data.datasets.bad_input import BadInput, DatasetError, csv_row
from harness.data.datasets.image_decode import PNG_SIGNATURE
from harness.data.datasets.nih_index import NIH_LABELS, SKIP_BAD_HINT, NihIndex
from harness.data.pixel_store import PRESET_TEST, PRESET_TRAIN_VAL

BOX_FILE = "BBox_List_2017.csv"
HEADER = ("Image Index", "Finding Label", "Bbox [x", "y", "w", "h]")
BOX_FIELDS = ("x", "y", "w", "h")
EDGE_TOLERANCE = 1e-6  # pixels: a box ending on the edge may overshoot it by the rounding of x + w
ALIASES = {"Infiltrate": "Infiltration"}  # BBox_List_2017.csv's spelling -> the label's
_LABEL_INDEX = {name: i for i, name in enumerate(NIH_LABELS)} | {
    alias: NIH_LABELS.index(label) for alias, label in ALIASES.items()}
_KNOWN = ", ".join(NIH_LABELS) + ", and " + ", ".join(f"'{a}' for {label}" for a, label in ALIASES.items())


@dataclass(frozen=True)
class NihBoxes:
    """The good rows of the box file, in file order, in pixels of each image's PNG (floats, as read)."""

    file: str | None  # the box file's name, None when the tree has none
    rows: np.ndarray  # int64 (M,): each box's image, as its row in the NihIndex
    labels: np.ndarray  # int64 (M,): label index (NIH_LABELS order)
    xywh: np.ndarray  # float64 (M, 4): x, y, w, h in the PNG's pixels
    image_sizes: np.ndarray  # int64 (M, 2): the PNG's width and height
    lines: np.ndarray  # int64 (M,): line numbers in the file (the header is line 1)
    skipped: tuple[BadInput, ...] = ()
    unlabelled: int = 0  # boxes whose finding is not among their image's labels in the index

    def __len__(self) -> int:
        return len(self.rows)


def boxes_fingerprint(root: Path) -> dict:
    """Plain-JSON key of the box file for the store's cache key: {} without one, else its name and SHA-256,
    so a store prepared before the file appeared or changed is never served with stale boxes."""
    path = Path(root) / BOX_FILE
    if not path.is_file():
        return {}
    with path.open("rb") as file:
        return {"bbox_file": BOX_FILE, "bbox_sha256": hashlib.file_digest(file, "sha256").hexdigest()}


def read_nih_boxes(index: NihIndex, skip_bad: bool = False) -> NihBoxes:
    """Read `BBox_List_2017.csv` beside the index's CSV (no boxes when there is none).

    Raises DatasetError for a header that is not NIH's and, unless `skip_bad`, at the first bad row;
    with `skip_bad` bad rows are dropped and listed in `NihBoxes.skipped`.
    """
    path = index.root / BOX_FILE
    if not path.is_file():
        return _no_boxes(None)
    position = {name: row for row, name in enumerate(index.sample_ids)}
    sizes: dict[int, tuple[int, int] | None] = {}
    good: list[tuple[int, int, list[float], tuple[int, int], int]] = []
    skipped: list[BadInput] = []
    for line, cells in _records(path):
        row, label, numbers, size, problem = _check_row(cells, position, sizes, index)
        if problem is not None:
            bad = BadInput(csv_row(line, BOX_FILE), problem)
            if not skip_bad:
                raise DatasetError(f"{bad} {SKIP_BAD_HINT}")
            skipped.append(bad)
            continue
        good.append((row, label, numbers, size, line))
    if not good:
        return _no_boxes(BOX_FILE, tuple(skipped))
    rows = np.array([item[0] for item in good], np.int64)
    labels = np.array([item[1] for item in good], np.int64)
    return NihBoxes(
        file=BOX_FILE, rows=rows, labels=labels,
        xywh=np.array([item[2] for item in good], np.float64),
        image_sizes=np.array([item[3] for item in good], np.int64),
        lines=np.array([item[4] for item in good], np.int64),
        skipped=tuple(skipped), unlabelled=int((index.labels[rows, labels] == 0).sum()),
    )


def scale_boxes(xywh: np.ndarray, image_sizes: np.ndarray, size: int) -> np.ndarray:
    """(M, 4) float boxes in pixels of (M, 2) images (width, height) -> (M, 4) int32 boxes at size x size
    (the rule in the module docstring: floor the start, ceil the end, clip, at least one pixel)."""
    dims = np.asarray(image_sizes, np.float64)  # (M, 2): W, H
    # Multiply before dividing: an edge that lands on a stored pixel's border (x * S / W an integer
    # for integer x) is then exact, and floor / ceil do not move it by one.
    start = np.floor(xywh[:, :2] * size / dims)
    end = np.ceil((xywh[:, :2] + xywh[:, 2:]) * size / dims)
    start = np.clip(start, 0, size - 1)
    end = np.clip(end, 0, size)
    extent = np.maximum(end - start, 1)
    return np.concatenate([start, extent], axis=1).astype(np.int32)


def store_boxes(boxes: NihBoxes, kept: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """The store's boxes (M', 6) int32 (sample, label, x, y, w, h at `size`), sorted by sample, then label,
    then file order, and how many boxes were dropped because their image is not in the store.

    `kept` holds the index rows in the store, in store order (store sample i is index row kept[i]).
    """
    if not len(boxes):
        return np.zeros((0, 6), np.int32), 0
    sample_of = np.full(int(max(boxes.rows.max(), np.max(kept, initial=-1))) + 1, -1, np.int64)
    sample_of[np.asarray(kept, np.int64)] = np.arange(len(kept))
    samples = sample_of[boxes.rows]
    inside = samples >= 0
    if (boxes.image_sizes[inside] == 0).any():  # an unreadable PNG header, yet the image was decoded
        raise ValueError("a stored image's PNG header could not be read to scale its boxes")
    order = np.lexsort((boxes.lines[inside], boxes.labels[inside], samples[inside]))
    scaled = scale_boxes(boxes.xywh[inside], boxes.image_sizes[inside], size)
    table = np.column_stack([samples[inside], boxes.labels[inside], scaled]).astype(np.int32)[order]
    return np.ascontiguousarray(table), int((~inside).sum())


def box_notes(boxes: NihBoxes, table: np.ndarray, dropped: int, split_codes: np.ndarray, size: int) -> dict:
    """What the report and the prepare summary say about the boxes (plain JSON)."""
    if boxes.file is None:
        return {"bounding_boxes": f"no {BOX_FILE} in the NIH folder: no bounding boxes, localisation is not scored",
                "box_counts": {"file": None, "boxes": 0, "boxed_images": 0}}
    samples = table[:, 0]
    counts = {
        "file": boxes.file, "boxes": len(table), "boxed_images": len(np.unique(samples)),
        "findings": {NIH_LABELS[k]: int(n) for k, n in zip(*np.unique(table[:, 1], return_counts=True), strict=True)},
        "dropped_image_not_in_store": dropped, "skipped_rows": len(boxes.skipped),
        "not_among_image_labels": boxes.unlabelled,
    }  # fmt: skip
    sentence = (f"{counts['boxes']:,} bounding boxes on {counts['boxed_images']:,} images read from {boxes.file}, "
                f"scaled to {size}x{size} (start floored, end ceiled)")
    if split_codes.any():  # the official lists: say which side the boxes are on
        codes = split_codes[samples]
        counts["official_test_boxes"] = int((codes == PRESET_TEST).sum())
        counts["official_train_val_boxes"] = int((codes == PRESET_TRAIN_VAL).sum())
        sentence += (f"; {counts['official_test_boxes']:,} on official test images, "
                     f"{counts['official_train_val_boxes']:,} on train_val images")
    if dropped:
        sentence += f"; {dropped:,} dropped because their image is not in the store"
    if boxes.unlabelled:
        sentence += f"; {boxes.unlabelled:,} name a finding their image is not labelled with"
    return {"bounding_boxes": sentence, "box_counts": counts}


# ---------------------------------------------------------------------------------------------
# The file and its rows
# ---------------------------------------------------------------------------------------------


def _no_boxes(file: str | None, skipped: tuple[BadInput, ...] = ()) -> NihBoxes:
    return NihBoxes(file=file, rows=np.zeros(0, np.int64), labels=np.zeros(0, np.int64),
                    xywh=np.zeros((0, 4), np.float64), image_sizes=np.zeros((0, 2), np.int64),
                    lines=np.zeros(0, np.int64), skipped=skipped)


def _records(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, cells) of every non-blank data row, after checking the header."""
    with path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.reader(file)
        header = _without_trailing_empties([cell.strip() for cell in next(reader, [])])
        if ",".join(header).replace(" ", "") != ",".join(HEADER).replace(" ", ""):
            raise DatasetError(f"{BOX_FILE}: header {','.join(header)!r} is not NIH's "
                               f"'Image Index,Finding Label,Bbox [x,y,w,h]'; use the original file")
        return [(reader.line_num, cells) for cells in reader if any(cell.strip() for cell in cells)]


def _without_trailing_empties(cells: list[str]) -> list[str]:
    while cells and not cells[-1].strip():
        cells = cells[:-1]
    return cells


def _check_row(
    cells: list[str], position: dict[str, int], sizes: dict[int, tuple[int, int] | None], index: NihIndex
) -> tuple[int, int, list[float], tuple[int, int], str | None]:
    """(index row, label, [x, y, w, h], (width, height), None) for a good row, else a reason last."""
    nothing: tuple[int, int, list[float], tuple[int, int]] = (0, 0, [], (0, 0))
    cells = _without_trailing_empties(cells)
    if len(cells) != len(HEADER):
        return *nothing, (f"{len(HEADER)} fields expected (Image Index, Finding Label, Bbox x, y, w, h), "
                          f"found {len(cells)} before the trailing empty ones")
    name, finding = cells[0].strip(), cells[1].strip()
    if name not in position:
        return *nothing, (f"Image Index {name!r} has no usable row in {index.csv_path.name} "
                          "(not listed there, or its row was skipped); a box needs its image")
    if finding not in _LABEL_INDEX:
        return *nothing, f"Finding Label {finding!r} is not a ChestX-ray14 finding (known: {_KNOWN})"
    numbers = []
    for field, cell in zip(BOX_FIELDS, cells[2:], strict=True):
        try:
            value = float(cell)
        except ValueError:
            return *nothing, f"Bbox {field} {cell.strip()!r} is not a number"
        if not math.isfinite(value):
            return *nothing, f"Bbox {field} {cell.strip()!r} is not a finite number"
        numbers.append(value)
    row = position[name]
    if row not in sizes:
        sizes[row] = png_size(index.image_paths[row])
    size = sizes[row]
    if size is None:  # not a PNG: the decoder names the image itself, and with skip_bad it is not stored
        return row, _LABEL_INDEX[finding], numbers, (0, 0), None
    problem = _outside(numbers, size, name)
    return row, _LABEL_INDEX[finding], numbers, size, problem


def _outside(numbers: list[float], size: tuple[int, int], name: str) -> str | None:
    """Why the box x, y, w, h is not inside an image of (width, height), or None."""
    x, y, w, h = numbers
    for field, value in (("x", x), ("y", y)):
        if value < 0:
            return f"Bbox {field} {value:g} is negative: the box starts outside the image"
    for field, value in (("w", w), ("h", h)):
        if value <= 0:
            return f"Bbox {field} {value:g} is not positive: the box is empty"
    for fields, end, limit, side in (("x + w", x + w, size[0], "width"), ("y + h", y + h, size[1], "height")):
        if end > limit + EDGE_TOLERANCE:
            return (f"Bbox {fields} = {end:g} lies beyond the image's {side} of {limit} pixels "
                    f"({name} is {size[0]}x{size[1]})")
    return None


def png_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk (the first 24 bytes), or None when it is not a PNG."""
    try:
        with open(path, "rb") as file:
            head = file.read(24)
    except OSError:
        return None
    if len(head) < 24 or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
