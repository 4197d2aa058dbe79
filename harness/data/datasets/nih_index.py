"""Index an NIH ChestX-ray14 tree: which images, which labels, which patients, which official split.

One job: read `Data_Entry_2017*.csv`, the image folders and the official split lists into a
`NihIndex`, without decoding a single image (decoding is `image_decode`, caching is the pixel
store). Every problem names its file or CSV row and says what to do. Bad rows either stop the
read at the first one (the default) or, with skip_bad, are dropped and listed in `skipped`.

What it accepts (NIH ChestX-ray14 as NIH publishes it)
    - the 2020 revision `Data_Entry_2017_v2020.csv` (preferred) or `Data_Entry_2017.csv`;
    - header cells mapped by name (the bracketed names span two fields), `Patient Gender` or
      `Patient Sex`, a trailing comma on the header and/or the rows;
    - images under `images_NNN/images/` (as the tarballs unpack) and/or a flat `images/`;
    - the official lists `train_val_list.txt` and `test_list.txt`, both or neither.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.data.datasets.bad_input import BadInput, DatasetError, csv_row
from harness.data.datasets.labels import CHESTXRAY14_LABELS

NIH_LABELS = CHESTXRAY14_LABELS
NO_FINDING = "No Finding"
CSV_NAMES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")  # in order of preference
TRAIN_VAL_LIST, TEST_LIST = "train_val_list.txt", "test_list.txt"
REQUIRED_COLUMNS = ("Image Index", "Finding Labels", "Patient ID")
SEX_COLUMNS = ("Patient Gender", "Patient Sex")
SKIP_BAD_HINT = "(use --skip-bad to skip bad rows and files and list them)"

_LABEL_INDEX = {name: i for i, name in enumerate(NIH_LABELS)}
_SPLIT_FOLDER = re.compile(r"images_\d+")


@dataclass(frozen=True)
class NihIndex:
    """The usable rows of an NIH tree, in CSV order; arrays are read-only."""

    root: Path
    csv_path: Path
    image_paths: tuple[Path, ...]  # absolute, one per kept row
    sample_ids: tuple[str, ...]  # image names, "00000001_000.png"
    patient_ids: np.ndarray  # int64 (N,)
    labels: np.ndarray  # uint8 (N, 14), columns in NIH_LABELS order
    official_test: np.ndarray | None  # bool (N,): in test_list.txt; None without the official lists
    csv_rows: np.ndarray  # int64 (N,): line numbers in the CSV (the header is line 1)
    skipped: tuple[BadInput, ...] = ()
    notes: dict = field(default_factory=dict)  # plain JSON: CSV variant, layouts, counts

    def __len__(self) -> int:
        return len(self.sample_ids)


class _BadRows:
    """Bad rows: raise at the first (skip_bad=False) or collect them all."""

    def __init__(self, csv_name: str, skip_bad: bool) -> None:
        self.csv_name, self.skip_bad = csv_name, skip_bad
        self.found: list[BadInput] = []

    def add(self, line: int, reason: str) -> None:
        bad = BadInput(csv_row(line, self.csv_name), reason)
        if not self.skip_bad:
            raise DatasetError(f"{bad} {SKIP_BAD_HINT}")
        self.found.append(bad)


def read_nih_index(root: Path, skip_bad: bool = False) -> NihIndex:
    """Index the NIH ChestX-ray14 tree at `root` (CSV, image folders, official lists if present).

    Raises DatasetError for structural problems (no CSV, missing columns, no image folder, one
    list without the other, a patient in both official lists) and, unless `skip_bad`, at the first
    bad row. With `skip_bad`, bad rows are dropped and listed in `NihIndex.skipped`.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; "
                           f"give the folder that holds {CSV_NAMES[1]} and the images_NNN folders")
    csv_path = _find_csv(root)
    notes: dict = {"csv_file": csv_path.name, "csv_revision": "2020" if "v2020" in csv_path.name else "2017"}
    columns, records = _read_csv(csv_path, notes)
    images, twice = _scan_images(root, notes)
    lists = _read_official_lists(root)
    notes["official_lists"] = lists is not None
    bad = _BadRows(csv_path.name, skip_bad)

    kept_names, kept_paths, patients, label_rows, lines, in_test = [], [], [], [], [], []
    first_line: dict[str, int] = {}
    width = len(columns)
    for line, cells in records:
        if len(cells) != width:
            bad.add(line, f"{width} fields expected (as in the header), found {len(cells)}")
            continue
        name = cells[columns["Image Index"]].strip()
        problem = _check_name(name) or _check_duplicate(name, line, first_line)
        labels, label_problem = _parse_labels(cells[columns["Finding Labels"]])
        patient, patient_problem = _parse_patient(cells[columns["Patient ID"]])
        problem = problem or label_problem or patient_problem
        if not problem:
            problem = _check_on_disk(name, images, twice, root)
        test = None
        if not problem and lists is not None:
            test, problem = _official_side(name, *lists)
        if problem:
            bad.add(line, problem)
            continue
        kept_names.append(name)
        kept_paths.append(images[name])
        patients.append(patient)
        label_rows.append(labels)
        lines.append(line)
        in_test.append(test)

    label_matrix = np.zeros((len(kept_names), len(NIH_LABELS)), np.uint8)
    for row, indices in enumerate(label_rows):
        label_matrix[row, indices] = 1
    official_test = np.array(in_test, bool) if lists is not None else None
    patient_ids = np.array(patients, np.int64)
    if official_test is not None:
        _check_no_leakage(patient_ids, official_test, kept_names)
        assert lists is not None  # official_test is made only from the lists
        csv_names = set(first_line)
        notes["list_names_not_in_csv"] = len((lists[0] | lists[1]) - csv_names)
        notes["official_test_images"] = int(official_test.sum())
        notes["official_train_val_images"] = int(len(official_test) - official_test.sum())
    notes["pngs_not_in_csv"] = len(images.keys() - first_line.keys())
    notes["csv_data_rows"] = len(records)
    notes["kept_rows"] = len(kept_names)
    notes["skipped_rows"] = len(bad.found)
    return NihIndex(
        root=root,
        csv_path=csv_path,
        image_paths=tuple(map(Path, kept_paths)),
        sample_ids=tuple(kept_names),
        patient_ids=_read_only(patient_ids),
        labels=_read_only(label_matrix),
        official_test=None if official_test is None else _read_only(official_test),
        csv_rows=_read_only(np.array(lines, np.int64)),
        skipped=tuple(bad.found),
        notes=notes,
    )


def index_fingerprint(index: NihIndex) -> dict:
    """Plain-JSON key of an index for caches of decoded pixels: changes when any input changes.

    Hashes the CSV and list files' bytes, and each kept image's (name, size, mtime_ns) in order
    (stat only: no image is read), and lists the skipped rows.
    """
    rows = hashlib.sha256()
    for name, path in zip(index.sample_ids, index.image_paths, strict=True):
        info = os.stat(path)
        rows.update(f"{name}\t{info.st_size}\t{info.st_mtime_ns}\n".encode())
    lists = index.official_test is not None
    return {
        "csv_file": index.csv_path.name,
        "csv_sha256": _file_sha256(index.csv_path),
        "train_val_list_sha256": _file_sha256(index.root / TRAIN_VAL_LIST) if lists else None,
        "test_list_sha256": _file_sha256(index.root / TEST_LIST) if lists else None,
        "images": len(index),
        "images_sha256": rows.hexdigest(),
        "skipped": [bad.where for bad in index.skipped],
    }


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def _find_csv(root: Path) -> Path:
    for name in CSV_NAMES:
        if (root / name).is_file():
            return root / name
    raise DatasetError(f"{root}: no {' or '.join(CSV_NAMES)}; copy the NIH metadata CSV into this folder")


def _read_csv(path: Path, notes: dict) -> tuple[dict[str, int], list[tuple[int, list[str]]]]:
    """Header column positions and (line number, cells) of every non-blank data row.

    A trailing comma (an empty last cell) is dropped from the header and from each row.
    """
    with path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.reader(file)
        header = [cell.strip() for cell in next(reader, [])]
        if not any(header):
            raise DatasetError(f"{path.name}: empty file (no header); copy the NIH metadata CSV again")
        header_comma = header[-1] == ""
        if header_comma:
            header.pop()
        width, records, row_commas = len(header), [], 0
        for cells in reader:
            if not cells or cells == [""]:
                continue  # blank lines (typically at the end) carry no row
            if len(cells) == width + 1 and cells[-1] == "":
                cells.pop()
                row_commas += 1
            records.append((reader.line_num, cells))
    columns = {name: i for i, name in reversed(list(enumerate(header)))}
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise DatasetError(
            f"{path.name}: missing column(s) {', '.join(missing)} (found: {', '.join(header)}); "
            "use the original NIH Data_Entry_2017 CSV"
        )
    notes["csv_header_trailing_comma"] = header_comma
    notes["csv_rows_with_trailing_comma"] = row_commas
    notes["csv_sex_column"] = next((name for name in SEX_COLUMNS if name in columns), None)
    return columns, records


def _scan_images(root: Path, notes: dict) -> tuple[dict[str, str], dict[str, list[str]]]:
    """name -> path of every PNG in root/images_NNN/images/ and root/images/ (one scandir each),
    and the names found in more than one place with all their paths."""
    folders = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and _SPLIT_FOLDER.fullmatch(entry.name))
    candidates = [f"{name}/images" for name in folders] + ["images"]
    found = [folder for folder in candidates if (root / folder).is_dir()]
    if not found:
        raise DatasetError(
            f"{root}: no image folder; expected images_001/images/ .. images_012/images/ "
            "(as the NIH tarballs unpack) and/or a flat images/ folder of PNGs"
        )
    images: dict[str, str] = {}
    twice: dict[str, list[str]] = {}
    for folder in found:
        for entry in os.scandir(root / folder):
            if entry.name.endswith(".png") and entry.is_file():
                if entry.name in images:
                    twice.setdefault(entry.name, [images[entry.name]]).append(entry.path)
                else:
                    images[entry.name] = entry.path
    notes["image_layouts"] = sorted({"images" if folder == "images" else "images_NNN/images" for folder in found})
    notes["image_folders"] = found
    notes["pngs_on_disk"] = len(images) + sum(len(paths) - 1 for paths in twice.values())
    return images, twice


def _read_official_lists(root: Path) -> tuple[set[str], set[str]] | None:
    """(train_val names, test names), or None when neither list is there."""
    present = [name for name in (TRAIN_VAL_LIST, TEST_LIST) if (root / name).is_file()]
    if not present:
        return None
    if len(present) == 1:
        other = TEST_LIST if present[0] == TRAIN_VAL_LIST else TRAIN_VAL_LIST
        raise DatasetError(
            f"{root}: {present[0]} is there but {other} is not; the official split needs both "
            f"(copy {other} beside it, or remove {present[0]} to split without them)"
        )
    train_val, test = ({line.strip() for line in (root / name).read_text().splitlines()} - {""} for name in present)
    return train_val, test


def _file_sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


# ---------------------------------------------------------------------------------------------
# Rows: each check returns a reason, or None when the row is fine
# ---------------------------------------------------------------------------------------------


def _check_name(name: str) -> str | None:
    if not name.endswith(".png") or "/" in name or "\\" in name:
        return f"Image Index {name!r} is not a PNG file name like 00000001_000.png"
    return None


def _check_duplicate(name: str, line: int, first_line: dict[str, int]) -> str | None:
    # The first row with a name claims it even if it turns out bad: a later row with the same name
    # is still ambiguous, so both are dropped rather than guessing which one is right.
    earlier = first_line.setdefault(name, line)
    return f"duplicate of row {earlier:,}: image {name} is listed twice" if earlier != line else None


def _parse_labels(cell: str) -> tuple[list[int], str | None]:
    """Label column indices of a `Finding Labels` cell ('|'-separated, or 'No Finding')."""
    parts = [part.strip() for part in cell.split("|")]
    if parts == [NO_FINDING]:
        return [], None
    if parts == [""]:
        return [], f"empty Finding Labels (expected labels separated by '|', or '{NO_FINDING}')"
    if NO_FINDING in parts:
        return [], f"'{NO_FINDING}' combined with other labels in {cell!r}"
    unknown = [part for part in parts if part not in _LABEL_INDEX]
    if unknown:
        return [], f"unknown label {unknown[0]!r} (known: {', '.join(NIH_LABELS)}, or '{NO_FINDING}' alone)"
    return [_LABEL_INDEX[part] for part in parts], None


def _parse_patient(cell: str) -> tuple[int, str | None]:
    text = cell.strip()
    if not text.isascii() or not text.isdigit() or int(text) == 0:
        return 0, f"Patient ID {cell!r} is not a positive integer"
    return int(text), None


def _check_on_disk(name: str, images: dict[str, str], twice: dict[str, list[str]], root: Path) -> str | None:
    if name in twice:
        return f"image found twice: {' and '.join(twice[name])}; delete all but one"
    if name not in images:
        return f"image {name} not found under {root} (images_NNN/images/ or images/)"
    return None


def _official_side(name: str, train_val: set[str], test: set[str]) -> tuple[bool | None, str | None]:
    """Whether the image is in the official test list, or why its side cannot be told."""
    if name in test and name in train_val:
        return None, f"image {name} is in both {TRAIN_VAL_LIST} and {TEST_LIST}"
    if name not in test and name not in train_val:
        return None, f"image {name} is in neither {TRAIN_VAL_LIST} nor {TEST_LIST}"
    return name in test, None


def _check_no_leakage(patient_ids: np.ndarray, official_test: np.ndarray, names: list[str]) -> None:
    """A patient on both sides of the official split would leak between training and test."""
    sides: dict[int, list[str | None]] = {}
    for patient, test, name in zip(patient_ids.tolist(), official_test.tolist(), names, strict=True):
        side = sides.setdefault(patient, [None, None])
        if side[test] is None:
            side[test] = name
            if side[not test] is not None:
                raise DatasetError(
                    f"patient {patient} has images in both {TRAIN_VAL_LIST} ({side[0]}) and {TEST_LIST} "
                    f"({side[1]}): the official split leaks a patient; use the original NIH list files"
                )


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array
