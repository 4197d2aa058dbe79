"""`harness data prepare nih`: every image decoded once, in order, resumable, atomic, bad files named."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.nih_tree import synthetic_radiograph, write_tree
from conftest import harness_process, run_harness
from harness.data.datasets.bad_input import DatasetError
from harness.data.datasets.nih import CHUNK_IMAGES, prepare_nih
from harness.data.datasets.summary import summary_lines
from harness.data.split_plan import plan_splits
from harness.data.pixel_store import PRESET_TEST, PRESET_TRAIN_VAL
from harness.data.store_builder import JOURNAL_FILE


def image_path(root: Path, name: str) -> Path:
    return next(root.glob(f"images*/**/{name}"))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def test_every_image_is_decoded_in_csv_order_with_its_labels_patient_and_official_side(tmp_path):
    root = tmp_path / "nih"
    rows = write_tree(root, patients=30, images_per_patient=[1, 2, 5] * 10, image_size=40, layout="split")
    store = prepare_nih(root, 32, tmp_path / "cache", processes=2).store
    assert store.sample_ids == tuple(row.image_index for row in rows)
    assert list(store.patient_ids) == [row.patient_id for row in rows]
    written = cv2.imread(str(image_path(root, rows[7].image_index)), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(store.pixels[7], cv2.resize(written, (32, 32), interpolation=cv2.INTER_AREA))
    test_names = set((root / "test_list.txt").read_text().split())
    expected = [PRESET_TEST if row.image_index in test_names else PRESET_TRAIN_VAL for row in rows]
    assert list(store.split_codes) == expected
    plan = plan_splits(store, (0.7, 0.1, 0.2), seed=0, folds=3)
    for split in plan.splits:  # the official test set, whole, in every fold; no patient on two sides
        assert {store.sample_ids[i] for i in split.test} == test_names
        train, validation, test = (set(store.patient_ids[part]) for part in (split.train, split.validation, split.test))
        assert train.isdisjoint(validation) and test.isdisjoint(train | validation)
    validated = np.concatenate([split.validation for split in plan.splits])
    assert len(validated) == len(set(validated)) == len(store) - len(test_names)  # each image validates once
    again = plan_splits(store, (0.7, 0.1, 0.2), seed=0, folds=3)
    other = plan_splits(store, (0.7, 0.1, 0.2), seed=1, folds=3)
    assert all(np.array_equal(a.validation, b.validation) for a, b in zip(plan.splits, again.splits))
    assert not all(np.array_equal(a.validation, b.validation) for a, b in zip(plan.splits, other.splits))


def test_flat_layout_without_official_lists_is_split_by_patient(tmp_path):
    root = tmp_path / "nih"
    write_tree(root, patients=40, images_per_patient=3, image_size=32, layout="flat", official_lists=False,
               variant="trailing_comma")
    store = prepare_nih(root, 32, tmp_path / "cache").store
    assert not store.split_codes.any()
    split = plan_splits(store, (0.7, 0.1, 0.2), seed=0).splits[0]
    parts = [set(store.patient_ids[indices]) for indices in split.parts().values()]
    assert parts[0].isdisjoint(parts[1]) and parts[0].isdisjoint(parts[2]) and parts[1].isdisjoint(parts[2])
    assert sum(map(len, split.parts().values())) == 120


def test_a_bad_png_stops_prepare_naming_it_and_skip_bad_resumes_and_lists_it(tmp_path):
    root, cache = tmp_path / "nih", tmp_path / "cache"
    rows = write_tree(root, patients=100, images_per_patient=2, image_size=32, layout="split")
    bad = rows[150].image_index  # in the third chunk of 64
    truncate(image_path(root, bad))
    with pytest.raises(DatasetError, match=rf"images_\d+/images/{bad}: .*truncated.*use --skip-bad"):
        prepare_nih(root, 32, cache, processes=2)
    partial = next((cache / "stores").glob("*.partial"))
    journal = json.loads((partial / JOURNAL_FILE).read_text())
    assert journal["progress"]["next_row"] == 2 * CHUNK_IMAGES  # the two good chunks are kept for the resume
    assert not [p for p in (cache / "stores").iterdir() if p.is_dir() and not p.name.endswith(".partial")]

    store = prepare_nih(root, 32, cache, skip_bad=True, processes=2).store
    assert len(store) == 199 and bad not in store.sample_ids
    assert [item["where"].endswith(bad) for item in store.notes["skipped"]] == [True]
    assert "truncated" in store.notes["skipped"][0]["reason"]
    summary = "\n".join(summary_lines(store))
    assert "199 images of 100 patients at 32x32" in summary and "skipped: 1" in summary and bad in summary


def test_converted_images_are_counted_and_named(tmp_path):
    root = tmp_path / "nih"
    rows = write_tree(root, patients=6, images_per_patient=2, image_size=32, layout="flat", official_lists=False)
    gray = synthetic_radiograph(5, 32)
    cv2.imwrite(str(image_path(root, rows[3].image_index)), np.dstack([gray, gray, gray, np.full_like(gray, 255)]))
    store = prepare_nih(root, 32, tmp_path / "cache").store
    assert len(store) == 12
    assert [item["where"] for item in store.notes["converted"]] == [f"images/{rows[3].image_index}"]
    assert np.array_equal(store.pixels[3], gray)


def test_data_prepare_command_prints_the_summary_then_reuses_the_store(tmp_path):
    root = tmp_path / "nih"
    write_tree(root, patients=12, images_per_patient=2, image_size=32, layout="split")
    env = {"CXRBENCH_CACHE": str(tmp_path / "cache")}
    first = run_harness(["data", "prepare", "nih", "--root", str(root), "--image-size", "32"], tmp_path, env)
    assert first.returncode == 0, first.stderr
    assert "24 images of 12 patients at 32x32" in first.stdout and "positives per label: Atelectasis" in first.stdout
    assert "skipped: 0" in first.stdout
    second = run_harness(["data", "prepare", "nih", "--root", str(root), "--image-size", "32"], tmp_path, env)
    assert "already prepared; nothing decoded" in second.stdout
    missing = run_harness(["data", "prepare", "nih", "--root", str(tmp_path / "nowhere")], tmp_path, env)
    assert missing.returncode == 2 and f"{tmp_path / 'nowhere'}: no such folder" in missing.stderr


def test_an_interrupted_prepare_resumes_to_the_same_store_as_an_uninterrupted_one(tmp_path):
    root = tmp_path / "nih"
    pool = [cv2.imencode(".png", synthetic_radiograph(seed, 512))[1].tobytes() for seed in range(4)]

    def place(i, row, path):
        path.write_bytes(pool[i % len(pool)])

    write_tree(root, patients=200, images_per_patient=3, layout="split", place_image=place)
    args = ["data", "prepare", "nih", "--root", str(root), "--image-size", "64", "--processes", "1"]
    cache = tmp_path / "interrupted"
    process = harness_process(args, tmp_path, {"CXRBENCH_CACHE": str(cache)})
    deadline = time.monotonic() + 120
    while not list((cache / "stores").glob(f"*.partial/{JOURNAL_FILE}")):
        assert process.poll() is None and time.monotonic() < deadline, "prepare ended before it could be interrupted"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    journal = json.loads(next((cache / "stores").glob(f"*.partial/{JOURNAL_FILE}")).read_text())
    assert 0 < journal["progress"]["next_row"] < 600  # stopped part-way, progress recorded

    resumed = run_harness(args, tmp_path, {"CXRBENCH_CACHE": str(cache)})
    assert resumed.returncode == 0, resumed.stderr
    fresh = prepare_nih(root, 64, tmp_path / "fresh", processes=2).store
    resumed_meta = json.loads(next(p for p in (cache / "stores").iterdir() if p.is_dir()).joinpath("meta.json").read_text())
    assert resumed_meta["content_sha256"] == fresh.content_sha256
    assert not list((cache / "stores").glob("*.partial"))
