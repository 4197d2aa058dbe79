"""Write synthetic trees in the NIH ChestX-ray14 layout: PNGs, Data_Entry CSV, official lists, boxes.

One job: lay files out exactly as the NIH download does (`images_0NN/images/*.png`, the Data_Entry
CSV, the official lists, on request BBox_List_2017.csv), so the readers (`harness.data.datasets.nih_index`,
`nih_boxes`) and the decoder can be tested and timed without the 42 GB original. Small trees for tests
use the default image writer; the full-size generator (`make_nih_tree.py`) passes its own
`place_image` that hard-links a pool of realistic PNGs.

    rows = write_tree(tmp_path, patients=6, images_per_patient=3, image_size=32, layout="split")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from harness.data.datasets.nih_index import NIH_LABELS
from harness.data.datasets.phantom_labels import latent_correlation, latent_thresholds, sample_labels

LABELS = NIH_LABELS  # spelled and ordered as in the CSV
CSV_VARIANTS = ("2017", "trailing_comma", "patient_sex", "v2020")
LAYOUTS = ("split", "flat")
# As the NIH tarballs unpack: images_001 holds 4,999 images, the others 10,000 (the last 7,121).
NIH_FIRST_FOLDER, NIH_FOLDER = 4999, 10000
TEST_SHARE = 25596 / 112120  # share of images in the official test_list.txt
PA_SHARE = 67310 / 112120  # View Position: PA, else AP
# The 8 findings of BBox_List_2017.csv, spelled as that file spells them (Infiltration is "Infiltrate").
BOX_FINDINGS = {"Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Effusion": "Effusion",
                "Infiltration": "Infiltrate", "Mass": "Mass", "Nodule": "Nodule", "Pneumonia": "Pneumonia",
                "Pneumothorax": "Pneumothorax"}
BOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"  # as in the real file, trailing empty columns included

PlaceImage = Callable[[int, "NihRow", Path], None]


@dataclass(frozen=True)
class NihRow:
    """One row of Data_Entry_2017.csv (11 fields: the bracketed columns span two)."""

    image_index: str
    finding_labels: str
    follow_up: int
    patient_id: int
    age: int = 50
    gender: str = "M"
    view: str = "PA"
    width: int = 2500
    height: int = 2048
    spacing: float = 0.143

    def fields(self) -> list[str]:
        """The row's 11 CSV fields, in header order."""
        return [
            self.image_index, self.finding_labels, str(self.follow_up), str(self.patient_id), str(self.age),
            self.gender, self.view, str(self.width), str(self.height), f"{self.spacing:g}", f"{self.spacing:g}",
        ]  # fmt: skip


@dataclass(frozen=True)
class BoxRow:
    """One row of BBox_List_2017.csv: x, y, w, h in pixels of the image's PNG."""

    image_index: str
    finding: str  # as the box file spells it ("Infiltrate")
    x: float
    y: float
    w: float
    h: float

    def fields(self) -> list[str]:
        """The row's 6 CSV fields; the numbers as Python writes floats (the real file has ~15 digits)."""
        return [self.image_index, self.finding, *(repr(float(v)) for v in (self.x, self.y, self.w, self.h))]


def write_box_file(root: Path, boxes: Sequence[BoxRow], row_commas: bool = False) -> Path:
    """Write root/BBox_List_2017.csv with the real header; `row_commas` ends each row with ',,,' too."""
    tail = ",,," if row_commas else ""
    path = Path(root) / "BBox_List_2017.csv"
    path.write_text("\n".join([BOX_HEADER] + [",".join(box.fields()) + tail for box in boxes]) + "\n")
    return path


def sample_boxes(
    rows: Sequence[NihRow], image_size: int, boxed_images: int | None = None, seed: int = 0
) -> list[BoxRow]:
    """Boxes on up to `boxed_images` images (None: all) that carry one of the 8 box findings, one box per
    such finding, inside the `image_size` PNG, in CSV order. Spread over all patients, so images of the
    official test list get boxes too."""
    rng = np.random.default_rng(seed)
    candidates = [row for row in rows if set(row.finding_labels.split("|")) & BOX_FINDINGS.keys()]
    if boxed_images is not None and boxed_images < len(candidates):
        picked = np.sort(rng.choice(len(candidates), boxed_images, replace=False))
        candidates = [candidates[i] for i in picked.tolist()]
    boxes = []
    for row in candidates:
        for label in row.finding_labels.split("|"):
            if label in BOX_FINDINGS:
                w, h = rng.uniform(0.05, 0.4, 2) * image_size
                # 0.999: clear of the far edge, whatever the floats round to
                x, y = rng.uniform(0, image_size - w) * 0.999, rng.uniform(0, image_size - h) * 0.999
                boxes.append(BoxRow(row.image_index, BOX_FINDINGS[label], x, y, w, h))
    return boxes


def csv_name(variant: str) -> str:
    """The CSV file name a variant uses: the 2020 revision has its own."""
    _require_choice("variant", variant, CSV_VARIANTS)
    return "Data_Entry_2017_v2020.csv" if variant == "v2020" else "Data_Entry_2017.csv"


def csv_header(variant: str) -> str:
    """The header line of a variant, as the NIH copies spell it (no trailing comma)."""
    _require_choice("variant", variant, CSV_VARIANTS)
    sex = "Patient Sex" if variant == "patient_sex" else "Patient Gender"
    return (
        f"Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,{sex},View Position,"
        "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
    )


def write_csv(root: Path, rows: Sequence[NihRow], variant: str = "2017") -> Path:
    """Write the rows as root/<csv_name(variant)>; "trailing_comma" ends every line with a comma."""
    comma = "," if variant == "trailing_comma" else ""
    lines = [csv_header(variant) + comma] + [",".join(row.fields()) + comma for row in rows]
    path = Path(root) / csv_name(variant)
    path.write_text("\n".join(lines) + "\n")  # no quoting needed: no field holds a comma
    return path


def write_official_lists(
    root: Path, rows: Sequence[NihRow], seed: int = 0, test_share: float = TEST_SHARE, test_patients: set[int] | None = None
) -> set[int]:
    """Write train_val_list.txt and test_list.txt, split patient-wise; returns the test patients.

    Unless `test_patients` are given, patients are taken in a seeded random order into the test
    list until it holds `test_share` of the images (at least one patient on each side when there
    are two or more).
    """
    test = set(test_patients) if test_patients is not None else _pick_test_patients(rows, seed, test_share)
    names = {True: [], False: []}
    for row in rows:
        names[row.patient_id in test].append(row.image_index)
    for in_test, file_name in ((False, "train_val_list.txt"), (True, "test_list.txt")):
        (Path(root) / file_name).write_text("".join(f"{name}\n" for name in sorted(names[in_test])))
    return test


def _pick_test_patients(rows: Sequence[NihRow], seed: int, test_share: float) -> set[int]:
    counts: dict[int, int] = {}
    for row in rows:
        counts[row.patient_id] = counts.get(row.patient_id, 0) + 1
    order = np.random.default_rng(seed).permutation(sorted(counts))
    test, taken = set(), 0
    for patient in order.tolist():
        if taken >= test_share * len(rows) or len(test) == len(order) - 1:
            break
        test.add(patient)
        taken += counts[patient]
    return test


def sample_rows(images_per_patient: int | Sequence[int] | np.ndarray, patients: int, seed: int = 0) -> list[NihRow]:
    """Rows for patients 1..patients, each with its number of follow-ups (an int for all, or one per patient).

    Labels follow the ChestX-ray14 prevalences and co-occurrences (the phantom's Gaussian copula,
    floor 0), correlated within a patient; age, sex, view and original size are plausible.
    """
    counts = np.broadcast_to(np.asarray(images_per_patient, np.int64), (patients,))
    if patients < 1 or counts.min() < 1:
        raise ValueError(f"need at least one patient and one image per patient (patients={patients}, min={counts.min()})")
    rng = np.random.default_rng(seed)
    thresholds, cholesky = latent_thresholds(0.0), np.linalg.cholesky(latent_correlation())
    rows = []
    for patient, count in enumerate(counts.tolist(), start=1):
        labels = sample_labels(rng, count, thresholds, cholesky)
        age, gender = int(rng.integers(1, 95)), "MF"[int(rng.integers(2))]
        for follow_up in range(count):
            found = sorted(LABELS[i] for i in np.flatnonzero(labels[follow_up]))  # NIH cells are alphabetical
            rows.append(NihRow(
                image_index=f"{patient:08d}_{follow_up:03d}.png",
                finding_labels="|".join(found) or "No Finding",
                follow_up=follow_up, patient_id=patient, age=min(age + follow_up // 4, 99), gender=gender,
                view="PA" if rng.random() < PA_SHARE else "AP",
                width=int(rng.integers(2000, 3056)), height=int(rng.integers(2000, 3056)),
                spacing=0.143 if rng.random() < 0.9 else 0.168,
            ))  # fmt: skip
    return rows


def image_folders(count: int, layout: str, images_per_folder: int | None = None) -> list[str]:
    """Folder (relative to the root) of each of `count` images: images_001/images.. or images."""
    _require_choice("layout", layout, LAYOUTS)
    if layout == "flat":
        return ["images"] * count
    if images_per_folder is None:  # NIH's own cut: 4,999 then 10,000 per folder
        return [f"images_{1 + (i + NIH_FOLDER - NIH_FIRST_FOLDER) // NIH_FOLDER:03d}/images" for i in range(count)]
    return [f"images_{1 + i // images_per_folder:03d}/images" for i in range(count)]


def synthetic_radiograph(seed: int, size: int) -> np.ndarray:
    """A small, cheap, distinct uint8 gray image: a bright body with two dark lungs, plus noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    body = np.exp(-(x**2 / 0.5 + y**2 / 0.9))
    lungs = np.exp(-(((np.abs(x) - 0.4) ** 2) / 0.05 + (y + 0.1) ** 2 / 0.25))
    image = 40 + 170 * body - 90 * lungs + rng.normal(0, 6, (size, size))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_image(index: int, row: NihRow, path: Path, size: int = 32, seed: int = 0) -> None:
    """The default image writer: a synthetic radiograph, distinct per image."""
    if not cv2.imwrite(str(path), synthetic_radiograph(seed * 1_000_003 + index, size)):
        raise OSError(f"{path}: OpenCV could not write the PNG")


def write_tree(
    root: Path,
    patients: int,
    images_per_patient: int | Sequence[int] | np.ndarray = 3,
    image_size: int = 32,
    layout: str = "split",
    seed: int = 0,
    official_lists: bool = True,
    variant: str = "2017",
    images_per_folder: int | None = None,
    place_image: PlaceImage | None = None,
    boxes: bool = False,
    boxed_images: int | None = None,
) -> list[NihRow]:
    """Write an NIH-layout tree under `root` and return its rows (in CSV order).

    `layout` "split" puts images in images_NNN/images/ (NIH's cut, or `images_per_folder` each),
    "flat" in images/. `place_image(i, row, path)` writes image i (default: a synthetic
    `image_size` PNG). With `official_lists`, patient-wise train_val_list.txt and test_list.txt.
    With `boxes`, BBox_List_2017.csv (`sample_boxes`: up to `boxed_images` images, None for every one
    with a box finding; coordinates in `image_size` pixels, the size of the PNGs `place_image` must write).
    """
    rows = sample_rows(images_per_patient, patients, seed)
    write_images(root, rows, layout, image_size, seed, images_per_folder, place_image)
    write_csv(root, rows, variant)
    if official_lists:
        write_official_lists(root, rows, seed)
    if boxes:
        write_box_file(root, sample_boxes(rows, image_size, boxed_images, seed))
    return rows


def write_images(
    root: Path,
    rows: Sequence[NihRow],
    layout: str = "split",
    image_size: int = 32,
    seed: int = 0,
    images_per_folder: int | None = None,
    place_image: PlaceImage | None = None,
) -> list[Path]:
    """Write one PNG per row in the layout (see `write_tree`); returns their paths in row order."""
    root = Path(root)
    folders = image_folders(len(rows), layout, images_per_folder)
    for folder in sorted(set(folders)):
        (root / folder).mkdir(parents=True, exist_ok=True)
    if place_image is None:

        def place_image(i: int, row: NihRow, path: Path) -> None:
            write_image(i, row, path, image_size, seed)

    paths = [root / folder / row.image_index for row, folder in zip(rows, folders)]
    for i, (row, path) in enumerate(zip(rows, paths)):
        place_image(i, row, path)
    return paths


def counts_from_histogram(histogram: dict[int, int], patients: int, images: int, seed: int = 0) -> np.ndarray:
    """Images per patient for `patients` patients summing to `images`, drawn from a histogram
    {images per patient: patients}. With the histogram's own totals it is the histogram, shuffled."""
    if not patients <= images:
        raise ValueError(f"images ({images:,}) must be at least patients ({patients:,})")
    sizes = np.repeat(np.array(list(histogram), np.int64), list(histogram.values()))
    rng = np.random.default_rng(seed)
    counts = rng.permutation(sizes) if len(sizes) == patients else rng.choice(sizes, patients)
    # Nudge random patients up or down by one image until the total is right (never below one).
    while (excess := int(counts.sum()) - images) != 0:
        pick = rng.integers(0, patients, min(abs(excess), patients))
        if excess > 0:
            pick = pick[counts[pick] > 1]
        np.add.at(counts, np.unique(pick), -1 if excess > 0 else 1)
    return counts


def _require_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: {value!r} is not one of {', '.join(allowed)}")
