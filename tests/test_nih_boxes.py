"""BBox_List_2017.csv: NIH's boxes read, checked row by row, scaled as the pixels were, and keyed into the store."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.nih_tree import BOX_HEADER, NihRow, write_csv, write_official_lists, write_tree
from harness.data.datasets.bad_input import DatasetError
from harness.data.datasets.nih import nih_source, prepare_nih
from harness.data.datasets.nih_boxes import ALIASES, BOX_FILE, read_nih_boxes, scale_boxes
from harness.data.datasets.nih_index import NIH_LABELS, SKIP_BAD_HINT, read_nih_index
from harness.data.datasets.summary import summary_lines
from harness.data.pixel_store import PRESET_TEST, PRESET_TRAIN_VAL, store_key

SIZE = 32  # the stored size
# Image A is 64x64 (scale 1/2), B is 80 wide and 40 high (x scaled by 0.4, y by 0.8: the store squashes it
# to a square, so its boxes are squashed alike), C is 64x64 without boxes. Patients 1, 2, 3.
ROWS = [
    NihRow("00000001_000.png", "Infiltration|Mass", 0, 1),
    NihRow("00000002_000.png", "Nodule", 0, 2),
    NihRow("00000003_000.png", "No Finding", 0, 3),
]
PNG_SIZES = {"00000001_000.png": (64, 64), "00000002_000.png": (80, 40), "00000003_000.png": (64, 64)}
# File order is not store order; rows with and without the real file's trailing empty columns.
GOOD_ROWS = [
    "00000002_000.png,Nodule,50,39.5,0.1,0.5",  # x 50*0.4=20 -> 20, end 50.1*0.4=20.04 -> 21; y 31.6 -> 31, 40*0.8=32
    "00000001_000.png,Mass,0,0,64,64,,,",  # the whole image
    "00000001_000.png,Infiltrate,10.2,20.0,30.5,7.9,,,",  # x 5.1 -> 5, end 20.35 -> 21; y 10, end 13.95 -> 14
]
INFILTRATION, MASS, NODULE = (NIH_LABELS.index(name) for name in ("Infiltration", "Mass", "Nodule"))
EXPECTED = [  # sample, label, x, y, w, h at 32x32, sorted by sample then label
    [0, INFILTRATION, 5, 10, 16, 4],
    [0, MASS, 0, 0, 32, 32],
    [1, NODULE, 20, 31, 1, 1],
]


def make_tree(root: Path, box_lines: list[str] | None = GOOD_ROWS, header: str = BOX_HEADER) -> Path:
    """The three images at their sizes, the Data_Entry CSV, and BBox_List_2017.csv unless `box_lines` is None."""
    (root / "images").mkdir(parents=True)
    for name, (width, height) in PNG_SIZES.items():
        pixels = np.random.default_rng(width + height).integers(0, 256, (height, width), dtype=np.uint8)
        assert cv2.imwrite(str(root / "images" / name), pixels)
    write_csv(root, ROWS)
    if box_lines is not None:
        (root / BOX_FILE).write_text("\n".join([header, *box_lines]) + "\n")
    return root


def boxes_error(root: Path) -> str:
    with pytest.raises(DatasetError) as caught:
        read_nih_boxes(read_nih_index(root))
    return str(caught.value)


def test_boxes_are_scaled_to_the_stored_size_as_the_pixels_were_resized_and_sorted(tmp_path):
    store = prepare_nih(make_tree(tmp_path / "nih"), SIZE, tmp_path / "cache", processes=1).store
    assert store.boxes.dtype == np.int32 and store.boxes.tolist() == EXPECTED
    counts = store.notes["box_counts"]
    assert counts == {"file": BOX_FILE, "boxes": 3, "boxed_images": 2,
                      "findings": {"Infiltration": 1, "Mass": 1, "Nodule": 1},
                      "dropped_image_not_in_store": 0, "skipped_rows": 0, "not_among_image_labels": 0}
    summary = "\n".join(summary_lines(store))
    assert f"3 bounding boxes on 2 images read from {BOX_FILE}, scaled to 32x32" in summary


def test_the_scaling_rule_floors_the_start_ceils_the_end_and_keeps_at_least_one_pixel():
    xywh = np.array([[10.2, 20.0, 30.5, 7.9], [1023.9, 0.0, 0.1, 0.001], [0.0, 0.0, 1024.0, 1024.0]])
    sizes = np.array([[64, 64], [1024, 1024], [1024, 1024]])
    # 64 -> 224 is x3.5: floor(35.7) = 35, ceil(40.7 * 3.5 = 142.45) = 143 -> w 108; 70, ceil(97.65) = 98 -> h 28.
    # 1024 -> 224: 1023.9 -> 223.98 -> 223, end 224 -> w 1; y 0, end 0.0002 -> 1 (at least one pixel).
    assert scale_boxes(xywh, sizes, 224).tolist() == [[35, 70, 108, 28], [223, 0, 1, 1], [0, 0, 224, 224]]


BAD_ROWS = {
    "unknown finding": ("00000001_000.png,Pneumonai,1,2,3,4",
                        r"Finding Label 'Pneumonai' is not a ChestX-ray14 finding \(known: Atelectasis, .*'Infiltr"),
    "image not in the index": ("00000099_000.png,Mass,1,2,3,4",
                               r"Image Index '00000099_000.png' has no usable row in Data_Entry_2017.csv"),
    "x negative": ("00000001_000.png,Mass,-0.5,2,3,4", r"Bbox x -0.5 is negative"),
    "y negative": ("00000001_000.png,Mass,1,-2,3,4", r"Bbox y -2 is negative"),
    "w zero": ("00000001_000.png,Mass,1,2,0,4", r"Bbox w 0 is not positive"),
    "h negative": ("00000001_000.png,Mass,1,2,3,-4", r"Bbox h -4 is not positive"),
    "beyond the width": ("00000001_000.png,Mass,60,2,4.5,4",
                         r"Bbox x \+ w = 64.5 lies beyond the image's width of 64 pixels \(00000001_000.png is 64x64"),
    "beyond the height": ("00000002_000.png,Nodule,1,30,3,10.25",
                          r"Bbox y \+ h = 40.25 lies beyond the image's height of 40 pixels \(\S+ is 80x40"),
    "not a number": ("00000001_000.png,Mass,1,2.5.1,3,4", r"Bbox y '2.5.1' is not a number"),
    "NaN": ("00000001_000.png,Mass,1,2,3,nan", r"Bbox h 'nan' is not a finite number"),
    "infinity": ("00000001_000.png,Mass,1,2,inf,4", r"Bbox w 'inf' is not a finite number"),
    "empty number": ("00000001_000.png,Mass,,2,3,4", r"Bbox x '' is not a number"),
    "too few fields": ("00000001_000.png,Mass,1,2,3", r"6 fields expected .*found 5"),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_a_bad_row_is_an_error_naming_the_file_the_row_and_the_field(tmp_path, case):
    line, reason = BAD_ROWS[case]
    root = make_tree(tmp_path / "nih", [GOOD_ROWS[0], line, GOOD_ROWS[1]])
    message = boxes_error(root)
    assert message.startswith(f"row 3 of {BOX_FILE}: ")  # the header is line 1, the bad row line 3
    assert re.search(reason, message), message
    assert message.endswith(SKIP_BAD_HINT)


def test_a_bad_box_stops_the_prepare_before_any_image_is_decoded(tmp_path):
    root = make_tree(tmp_path / "nih", [GOOD_ROWS[0], "00000001_000.png,Mass,1,2,3,nan"])
    with pytest.raises(DatasetError, match=rf"row 3 of {BOX_FILE}: Bbox h 'nan'"):
        prepare_nih(root, SIZE, tmp_path / "cache", processes=1)
    assert not (tmp_path / "cache" / "stores").exists()


def test_skip_bad_drops_and_lists_bad_box_rows_and_keeps_the_good_ones(tmp_path):
    root = make_tree(tmp_path / "nih", [GOOD_ROWS[0], "00000001_000.png,Pneumonai,1,2,3,4", *GOOD_ROWS[1:]])
    store = prepare_nih(root, SIZE, tmp_path / "cache", skip_bad=True, processes=1).store
    assert store.boxes.tolist() == EXPECTED
    assert [item["where"] for item in store.notes["skipped"]] == [f"row 3 of {BOX_FILE}"]
    assert "Pneumonai" in store.notes["skipped"][0]["reason"] and store.notes["box_counts"]["skipped_rows"] == 1


def test_headers_with_or_without_trailing_empty_columns_are_accepted_and_another_is_refused(tmp_path):
    for name, header in (("plain", "Image Index,Finding Label,Bbox [x,y,w,h]"), ("real", BOX_HEADER),
                         ("quoted", 'Image Index,Finding Label,"Bbox [x,y,w,h]",,,,,')):
        boxes = read_nih_boxes(read_nih_index(make_tree(tmp_path / name, header=header)))
        assert len(boxes) == 3 and boxes.lines.tolist() == [2, 3, 4], name
    root = make_tree(tmp_path / "other", header="Image,Label,x,y,w,h")
    assert boxes_error(root).startswith(f"{BOX_FILE}: header 'Image,Label,x,y,w,h' is not NIH's")


def test_without_a_box_file_the_store_has_no_boxes_and_says_so(tmp_path):
    store = prepare_nih(make_tree(tmp_path / "nih", None), SIZE, tmp_path / "cache", processes=1).store
    assert store.boxes.shape == (0, 6)
    expected = f"no {BOX_FILE} in the NIH folder: no bounding boxes, localisation is not scored"
    assert store.notes["bounding_boxes"] == expected
    assert store.notes["bounding_boxes"] in summary_lines(store)


def test_the_store_key_changes_when_the_box_file_appears_or_changes_so_no_stale_boxes_are_served(tmp_path):
    root, cache = make_tree(tmp_path / "nih", None), tmp_path / "cache"
    without = prepare_nih(root, SIZE, cache, processes=1)
    key_without = store_key(nih_source(without.index, SIZE))
    assert without.store.boxes.shape == (0, 6)

    (root / BOX_FILE).write_text("\n".join([BOX_HEADER, *GOOD_ROWS]) + "\n")
    appeared = prepare_nih(root, SIZE, cache, processes=1)
    key_appeared = store_key(nih_source(appeared.index, SIZE))
    assert not appeared.reused and appeared.store.boxes.tolist() == EXPECTED

    (root / BOX_FILE).write_text("\n".join([BOX_HEADER, *GOOD_ROWS[:2]]) + "\n")  # the Infiltrate box removed
    changed = prepare_nih(root, SIZE, cache, processes=1)
    assert not changed.reused and changed.store.boxes.tolist() == EXPECTED[1:]
    assert len({key_without, key_appeared, store_key(nih_source(changed.index, SIZE))}) == 3
    assert prepare_nih(root, SIZE, cache, processes=1).reused  # unchanged: the same store again
    assert without.store.content_sha256 == changed.store.content_sha256  # the pixels themselves did not change


def test_a_box_on_an_image_left_out_of_the_store_is_dropped_and_counted(tmp_path):
    root = make_tree(tmp_path / "nih")
    png = root / "images" / "00000002_000.png"
    png.write_bytes(png.read_bytes()[:100])  # truncated: with --skip-bad the image is not stored
    store = prepare_nih(root, SIZE, tmp_path / "cache", skip_bad=True, processes=1).store
    assert store.sample_ids == ("00000001_000.png", "00000003_000.png")
    assert store.boxes.tolist() == EXPECTED[:2]
    assert store.notes["box_counts"]["dropped_image_not_in_store"] == 1
    assert "1 dropped because their image is not in the store" in store.notes["bounding_boxes"]


def test_the_test_tree_writes_boxes_with_infiltrate_that_land_on_both_official_sides(tmp_path):
    root = tmp_path / "nih"
    write_tree(root, patients=40, images_per_patient=3, image_size=SIZE, layout="flat", boxes=True)
    lines = (root / BOX_FILE).read_text().splitlines()
    assert lines[0] == BOX_HEADER and any(",Infiltrate," in line for line in lines[1:])
    store = prepare_nih(root, SIZE, tmp_path / "cache", processes=2).store
    assert len(store.boxes) == len(lines) - 1 and store.notes["box_counts"]["not_among_image_labels"] == 0
    sides = store.split_codes[store.boxes[:, 0]]
    assert (sides == PRESET_TEST).any() and (sides == PRESET_TRAIN_VAL).any()
    counts = store.notes["box_counts"]
    assert counts["official_test_boxes"] == int((sides == PRESET_TEST).sum())
    assert counts["official_test_boxes"] + counts["official_train_val_boxes"] == len(store.boxes)
    # At the PNGs' own size the rule is floor(x), ceil(x + w): every box is inside and covers its floats.
    first = lines[1].split(",")
    x, y, w, h = map(float, first[2:6])
    sample = store.sample_ids.index(first[0])
    label = NIH_LABELS.index(ALIASES.get(first[1], first[1]))
    row = store.boxes[(store.boxes[:, 0] == sample) & (store.boxes[:, 1] == label)][0]
    assert row[2:].tolist() == [int(np.floor(x)), int(np.floor(y)), int(np.ceil(x + w) - np.floor(x)),
                                int(np.ceil(y + h) - np.floor(y))]
    assert (store.boxes[:, 2:4] + store.boxes[:, 4:6] <= SIZE).all()


def test_official_lists_give_the_side_of_each_box_in_the_notes(tmp_path):
    root = make_tree(tmp_path / "nih")
    write_official_lists(root, ROWS, test_patients={2})
    store = prepare_nih(root, SIZE, tmp_path / "cache", processes=1).store
    assert store.notes["box_counts"]["official_test_boxes"] == 1  # B's nodule
    assert store.notes["box_counts"]["official_train_val_boxes"] == 2
    assert "1 on official test images, 2 on train_val images" in store.notes["bounding_boxes"]
