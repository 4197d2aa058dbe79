"""read_nih_index: labels, patients, paths and official split of NIH trees, and every bad input named."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from benchmarks.nih_tree import (
    CSV_VARIANTS, NihRow, csv_name, write_csv, write_images, write_official_lists, write_tree,
)  # fmt: skip
from harness.data.datasets.bad_input import BadInput, DatasetError
from harness.data.datasets.nih_index import NIH_LABELS, SKIP_BAD_HINT, index_fingerprint, read_nih_index

CSV = "Data_Entry_2017.csv"
KNOWN = "Atelectasis, Cardiomegaly, Effusion, Infiltration, Mass, Nodule, Pneumonia, Pneumothorax, " \
        "Consolidation, Edema, Emphysema, Fibrosis, Pleural_Thickening, Hernia, or 'No Finding' alone"  # fmt: skip


def row(patient: int, follow_up: int, labels: str) -> NihRow:
    return NihRow(f"{patient:08d}_{follow_up:03d}.png", labels, follow_up, patient)


# Patients 1 (3 images), 2 (1), 3 (2), 7 (1); label cells in any order, all 14 labels in one row.
ROWS = [
    row(1, 0, "Cardiomegaly"),
    row(1, 1, "Emphysema|Cardiomegaly"),
    row(1, 2, "Hernia|Atelectasis"),
    row(2, 0, "No Finding"),
    row(3, 0, "|".join(reversed(NIH_LABELS))),
    row(3, 1, "Pleural_Thickening"),
    row(7, 0, "Infiltration"),
]
#              Ate Car Eff Inf Mas Nod Pna Ptx Con Ede Emp Fib PT  Her
EXPECTED_LABELS = [
    [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
    [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
    [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
]


def make_tree(root: Path, rows=ROWS, layout="split", variant="2017", test_patients=None, per_folder=3) -> Path:
    """Images for `rows` (8x8 PNGs, one per name), their CSV, and the official lists when `test_patients` is given."""
    unique = list({r.image_index: r for r in rows}.values())
    write_images(root, unique, layout, image_size=8, images_per_folder=per_folder)
    write_csv(root, rows, variant)
    if test_patients is not None:
        write_official_lists(root, rows, test_patients=test_patients)
    return root


def csv_lines(root: Path) -> list[str]:
    return (root / CSV).read_text().splitlines()


def set_csv_lines(root: Path, lines: list[str]) -> None:
    (root / CSV).write_text("\n".join(lines) + "\n")


def first_error(root: Path) -> str:
    with pytest.raises(DatasetError) as caught:
        read_nih_index(root)
    return str(caught.value)


def only_skipped(root: Path) -> BadInput:
    index = read_nih_index(root, skip_bad=True)
    assert len(index.skipped) == 1, index.skipped
    return index.skipped[0]


# --- good trees ------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["split", "flat"])
@pytest.mark.parametrize("variant", CSV_VARIANTS)
def test_every_csv_variant_and_layout_gives_the_same_labels_patients_and_paths(tmp_path, layout, variant):
    index = read_nih_index(make_tree(tmp_path, layout=layout, variant=variant))
    assert len(index) == 7
    assert index.labels.dtype == np.uint8 and index.labels.shape == (7, 14)
    assert index.labels.tobytes() == np.array(EXPECTED_LABELS, np.uint8).tobytes()
    assert index.patient_ids.dtype == np.int64 and index.patient_ids.tolist() == [1, 1, 1, 2, 3, 3, 7]
    assert index.sample_ids == tuple(r.image_index for r in ROWS)
    assert index.csv_rows.tolist() == [2, 3, 4, 5, 6, 7, 8]
    assert index.official_test is None and index.skipped == ()
    assert index.csv_path == tmp_path.resolve() / csv_name(variant)
    assert all(p.is_absolute() and p.is_file() and p.name == s for p, s in zip(index.image_paths, index.sample_ids))
    folders = [p.parent.relative_to(tmp_path.resolve()).as_posix() for p in index.image_paths]
    if layout == "split":
        assert folders == ["images_001/images"] * 3 + ["images_002/images"] * 3 + ["images_003/images"]
        assert index.notes["image_layouts"] == ["images_NNN/images"]
    else:
        assert folders == ["images"] * 7 and index.notes["image_layouts"] == ["images"]
    assert index.notes["csv_file"] == csv_name(variant)
    assert index.notes["csv_revision"] == ("2020" if variant == "v2020" else "2017")
    assert index.notes["csv_sex_column"] == ("Patient Sex" if variant == "patient_sex" else "Patient Gender")
    assert index.notes["csv_header_trailing_comma"] == (variant == "trailing_comma")
    assert index.notes["csv_rows_with_trailing_comma"] == (7 if variant == "trailing_comma" else 0)
    json.dumps(index.notes)  # plain JSON


def test_arrays_are_read_only(tmp_path):
    index = read_nih_index(make_tree(tmp_path, test_patients={2}))
    for array in (index.labels, index.patient_ids, index.csv_rows, index.official_test):
        with pytest.raises(ValueError):
            array[0] = 0


def test_2020_revision_is_preferred_when_both_csvs_are_present(tmp_path):
    make_tree(tmp_path)
    write_csv(tmp_path, [r if r.patient_id != 7 else row(7, 0, "Hernia") for r in ROWS], "v2020")
    index = read_nih_index(tmp_path)
    assert index.csv_path.name == "Data_Entry_2017_v2020.csv" and index.notes["csv_revision"] == "2020"
    assert index.labels[6].tolist() == [0] * 13 + [1]


@pytest.mark.parametrize("where", ["header", "rows"])
def test_trailing_comma_on_header_or_rows_alone_is_accepted(tmp_path, where):
    make_tree(tmp_path)
    lines = csv_lines(tmp_path)
    lines = [lines[0] + ","] + lines[1:] if where == "header" else [lines[0]] + [line + "," for line in lines[1:]]
    set_csv_lines(tmp_path, lines)
    index = read_nih_index(tmp_path)
    assert index.labels.tobytes() == np.array(EXPECTED_LABELS, np.uint8).tobytes()
    assert index.notes["csv_header_trailing_comma"] == (where == "header")
    assert index.notes["csv_rows_with_trailing_comma"] == (7 if where == "rows" else 0)


def test_blank_lines_are_ignored_and_line_numbers_count_them(tmp_path):
    make_tree(tmp_path)
    lines = csv_lines(tmp_path)
    set_csv_lines(tmp_path, lines[:3] + [""] + lines[3:] + ["", ""])
    index = read_nih_index(tmp_path)
    assert index.csv_rows.tolist() == [2, 3, 5, 6, 7, 8, 9]


def test_split_and_flat_folders_together_are_both_indexed(tmp_path):
    write_images(tmp_path, ROWS[:4], "split", image_size=8, images_per_folder=2)
    write_images(tmp_path, ROWS[4:], "flat", image_size=8)
    write_csv(tmp_path, ROWS)
    index = read_nih_index(tmp_path)
    assert len(index) == 7 and index.notes["image_layouts"] == ["images", "images_NNN/images"]
    assert index.notes["image_folders"] == ["images_001/images", "images_002/images", "images"]
    assert index.image_paths[6] == tmp_path.resolve() / "images" / "00000007_000.png"


def test_pngs_not_in_the_csv_are_ignored_and_counted(tmp_path):
    make_tree(tmp_path)
    write_images(tmp_path, [row(99, 0, "Mass"), row(99, 1, "Mass")], "flat", image_size=8)
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    index = read_nih_index(tmp_path)
    assert len(index) == 7 and index.notes["pngs_not_in_csv"] == 2 and index.notes["pngs_on_disk"] == 9


def test_generated_tree_with_many_images_per_patient_indexes_every_row(tmp_path):
    counts = [1, 4, 2, 7, 1, 3, 5, 1, 2, 6]
    rows = write_tree(tmp_path, patients=10, images_per_patient=counts, image_size=8, images_per_folder=7, seed=3)
    index = read_nih_index(tmp_path)
    assert len(index) == sum(counts) == len(rows)
    assert index.patient_ids.tolist() == [p for p, n in enumerate(counts, start=1) for _ in range(n)]
    assert index.notes["image_folders"] == [f"images_{k:03d}/images" for k in range(1, 6)]
    expected = np.zeros((len(rows), 14), np.uint8)
    for i, r in enumerate(rows):
        for name in r.finding_labels.split("|"):
            if name != "No Finding":
                expected[i, NIH_LABELS.index(name)] = 1
    assert np.array_equal(index.labels, expected)
    # The official lists are patient-wise: every patient sits on one side only.
    sides = {p: set(index.official_test[index.patient_ids == p].tolist()) for p in range(1, 11)}
    assert all(len(side) == 1 for side in sides.values()) and 0 < index.official_test.sum() < len(index)


# --- official lists --------------------------------------------------------------------------


def test_official_lists_mark_the_test_patients_rows(tmp_path):
    index = read_nih_index(make_tree(tmp_path, test_patients={2, 3}))
    assert index.official_test.dtype == bool
    assert index.official_test.tolist() == [False, False, False, True, True, True, False]
    notes = index.notes
    assert notes["official_lists"] is True
    assert (notes["official_test_images"], notes["official_train_val_images"], notes["list_names_not_in_csv"]) == (3, 4, 0)


def test_list_names_missing_from_the_csv_are_counted(tmp_path):
    make_tree(tmp_path, test_patients={2})
    with (tmp_path / "test_list.txt").open("a") as file:
        file.write("00099999_000.png\n00099999_001.png\n")
    assert read_nih_index(tmp_path).notes["list_names_not_in_csv"] == 2


@pytest.mark.parametrize("present", ["train_val_list.txt", "test_list.txt"])
def test_one_official_list_without_the_other_is_an_error(tmp_path, present):
    make_tree(tmp_path, test_patients={2})
    absent = {"train_val_list.txt", "test_list.txt"} - {present}
    (tmp_path / absent.pop()).unlink()
    message = first_error(tmp_path)
    assert f"{present} is there but" in message and "the official split needs both" in message
    assert f"remove {present}" in message


def test_image_in_neither_list_is_a_bad_row(tmp_path):
    make_tree(tmp_path, test_patients={2})
    lines = (tmp_path / "train_val_list.txt").read_text().splitlines()
    (tmp_path / "train_val_list.txt").write_text("\n".join(n for n in lines if n != "00000003_001.png") + "\n")
    assert only_skipped(tmp_path) == BadInput(
        "row 7 of Data_Entry_2017.csv", "image 00000003_001.png is in neither train_val_list.txt nor test_list.txt"
    )


def test_image_in_both_lists_is_a_bad_row(tmp_path):
    make_tree(tmp_path, test_patients={2})
    with (tmp_path / "test_list.txt").open("a") as file:
        file.write("00000007_000.png\n")
    assert only_skipped(tmp_path) == BadInput(
        "row 8 of Data_Entry_2017.csv", "image 00000007_000.png is in both train_val_list.txt and test_list.txt"
    )


def test_patient_on_both_sides_of_the_official_split_is_a_leakage_error(tmp_path):
    make_tree(tmp_path, test_patients={2})
    train_val = (tmp_path / "train_val_list.txt").read_text().splitlines()
    (tmp_path / "train_val_list.txt").write_text("\n".join(n for n in train_val if n != "00000001_002.png"))
    (tmp_path / "test_list.txt").write_text("00000002_000.png\n00000001_002.png\n")
    with pytest.raises(DatasetError) as caught:
        read_nih_index(tmp_path, skip_bad=True)  # not a row problem: skip_bad does not hide it
    assert str(caught.value).startswith(
        "patient 1 has images in both train_val_list.txt (00000001_000.png) and test_list.txt (00000001_002.png)"
    )


# --- structural errors -----------------------------------------------------------------------


def test_missing_csv_names_the_root_and_the_expected_files(tmp_path):
    write_images(tmp_path, ROWS, "flat", image_size=8)
    message = first_error(tmp_path)
    assert message.startswith(f"{tmp_path.resolve()}: no Data_Entry_2017_v2020.csv or Data_Entry_2017.csv")


def test_missing_columns_name_the_csv_the_missing_and_the_found_columns(tmp_path):
    make_tree(tmp_path)
    lines = csv_lines(tmp_path)
    set_csv_lines(tmp_path, [lines[0].replace("Patient ID", "PatientId").replace("Finding Labels", "Labels")] + lines[1:])
    message = first_error(tmp_path)
    assert message.startswith(
        "Data_Entry_2017.csv: missing column(s) Finding Labels, Patient ID (found: Image Index, Labels, Follow-up #, "
        "PatientId, Patient Age, Patient Gender, View Position, OriginalImage[Width, Height], "
        "OriginalImagePixelSpacing[x, y])"
    )


def test_no_image_folder_says_which_layouts_were_looked_for(tmp_path):
    write_csv(tmp_path, ROWS)
    (tmp_path / "images_001").mkdir()  # no images/ inside: not the NIH layout
    message = first_error(tmp_path)
    assert "no image folder" in message and "images_001/images/" in message and "flat images/" in message


# --- bad rows --------------------------------------------------------------------------------


def test_unknown_label_stops_at_its_row_with_the_known_labels_and_the_skip_hint(tmp_path):
    make_tree(tmp_path, [*ROWS[:2], row(1, 2, "Pneumonai"), *ROWS[3:]])
    assert first_error(tmp_path) == (
        f"row 4 of Data_Entry_2017.csv: unknown label 'Pneumonai' (known: {KNOWN}) {SKIP_BAD_HINT}"
    )
    assert SKIP_BAD_HINT == "(use --skip-bad to skip bad rows and files and list them)"


@pytest.mark.parametrize(
    "cell, reason",
    [
        ("", "empty Finding Labels (expected labels separated by '|', or 'No Finding')"),
        ("No Finding|Mass", "'No Finding' combined with other labels in 'No Finding|Mass'"),
        ("Mass||Effusion", f"unknown label '' (known: {KNOWN})"),
        ("mass", f"unknown label 'mass' (known: {KNOWN})"),
    ],
)
def test_bad_finding_labels_cells_are_bad_rows(tmp_path, cell, reason):
    make_tree(tmp_path, [*ROWS[:6], row(7, 0, cell)])
    assert only_skipped(tmp_path) == BadInput("row 8 of Data_Entry_2017.csv", reason)


@pytest.mark.parametrize("cell", ["0", "-3", "abc", "1.5", "", "٣"])
def test_patient_id_must_be_a_positive_integer(tmp_path, cell):
    make_tree(tmp_path)
    lines = csv_lines(tmp_path)
    fields = lines[5].split(",")
    fields[3] = cell
    set_csv_lines(tmp_path, lines[:5] + [",".join(fields)] + lines[6:])
    assert only_skipped(tmp_path) == BadInput("row 6 of Data_Entry_2017.csv", f"Patient ID {cell!r} is not a positive integer")


def test_row_with_the_wrong_number_of_fields_is_a_bad_row(tmp_path):
    make_tree(tmp_path)
    lines = csv_lines(tmp_path)
    set_csv_lines(tmp_path, lines[:3] + [lines[3].rsplit(",", 2)[0]] + lines[4:])
    assert only_skipped(tmp_path) == BadInput("row 4 of Data_Entry_2017.csv", "11 fields expected (as in the header), found 9")


def test_duplicate_image_name_names_the_earlier_row(tmp_path):
    make_tree(tmp_path, [*ROWS, row(2, 0, "Mass")])
    assert only_skipped(tmp_path) == BadInput(
        "row 9 of Data_Entry_2017.csv", "duplicate of row 5: image 00000002_000.png is listed twice"
    )


def test_image_missing_on_disk_is_a_bad_row(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "images_002" / "images" / "00000003_000.png").unlink()
    assert only_skipped(tmp_path) == BadInput(
        "row 6 of Data_Entry_2017.csv",
        f"image 00000003_000.png not found under {tmp_path.resolve()} (images_NNN/images/ or images/)",
    )


def test_image_found_in_two_folders_is_a_bad_row_naming_both(tmp_path):
    make_tree(tmp_path)
    write_images(tmp_path, [ROWS[6]], "flat", image_size=8)
    root = tmp_path.resolve()
    assert only_skipped(tmp_path) == BadInput(
        "row 8 of Data_Entry_2017.csv",
        f"image found twice: {root}/images_003/images/00000007_000.png and {root}/images/00000007_000.png; "
        "delete all but one",
    )


def test_skip_bad_drops_every_bad_row_lists_them_in_order_and_keeps_the_rest(tmp_path):
    rows = [*ROWS[:2], row(1, 2, "Pneumonai"), *ROWS[3:], row(8, 0, "No Finding|Edema"), row(1, 0, "Mass"),
            row(9, 0, "Mass")]  # fmt: skip
    make_tree(tmp_path, rows, test_patients={2})
    (tmp_path / "images_003" / "images" / "00000009_000.png").unlink()
    with pytest.raises(DatasetError, match=r"^row 4 of Data_Entry_2017.csv: unknown label 'Pneumonai'"):
        read_nih_index(tmp_path)  # the default stops at the first
    index = read_nih_index(tmp_path, skip_bad=True)
    assert [(bad.where, bad.reason.split(":")[0].split(" (")[0]) for bad in index.skipped] == [
        ("row 4 of Data_Entry_2017.csv", "unknown label 'Pneumonai'"),
        ("row 9 of Data_Entry_2017.csv", "'No Finding' combined with other labels in 'No Finding|Edema'"),
        ("row 10 of Data_Entry_2017.csv", "duplicate of row 2"),
        ("row 11 of Data_Entry_2017.csv", "image 00000009_000.png not found under " + str(tmp_path.resolve())),
    ]
    assert index.sample_ids == tuple(r.image_index for r in ROWS if r.image_index != "00000001_002.png")
    assert index.csv_rows.tolist() == [2, 3, 5, 6, 7, 8]
    assert index.labels.tobytes() == np.array(EXPECTED_LABELS[:2] + EXPECTED_LABELS[3:], np.uint8).tobytes()
    assert index.official_test.tolist() == [False, False, True, False, False, False]
    assert (index.notes["kept_rows"], index.notes["skipped_rows"], index.notes["csv_data_rows"]) == (6, 4, 10)


# --- fingerprint -----------------------------------------------------------------------------


def test_fingerprint_is_plain_json_stable_and_follows_every_input(tmp_path):
    make_tree(tmp_path, test_patients={2})
    first = index_fingerprint(read_nih_index(tmp_path))
    assert json.loads(json.dumps(first)) == first
    assert index_fingerprint(read_nih_index(tmp_path)) == first
    assert first["images"] == 7 and first["skipped"] == [] and len(first["images_sha256"]) == 64

    image = tmp_path / "images_001" / "images" / "00000001_000.png"
    info = image.stat()
    os.utime(image, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000))
    touched = index_fingerprint(read_nih_index(tmp_path))
    assert touched["images_sha256"] != first["images_sha256"]
    assert {k: v for k, v in touched.items() if k != "images_sha256"} == {k: v for k, v in first.items() if k != "images_sha256"}

    (tmp_path / "test_list.txt").write_text((tmp_path / "test_list.txt").read_text() + "\n")
    assert index_fingerprint(read_nih_index(tmp_path))["test_list_sha256"] != touched["test_list_sha256"]

    lines = csv_lines(tmp_path)
    set_csv_lines(tmp_path, lines[:-1] + [lines[-1].replace("Infiltration", "Pneumonai")])
    skipped = index_fingerprint(read_nih_index(tmp_path, skip_bad=True))
    assert skipped["csv_sha256"] != first["csv_sha256"]
    assert skipped["skipped"] == ["row 8 of Data_Entry_2017.csv"] and skipped["images"] == 6


def test_fingerprint_without_official_lists_has_none_for_them(tmp_path):
    fingerprint = index_fingerprint(read_nih_index(make_tree(tmp_path)))
    assert fingerprint["train_val_list_sha256"] is None and fingerprint["test_list_sha256"] is None

