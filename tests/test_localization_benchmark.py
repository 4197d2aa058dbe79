"""Localisation end to end with the null worker: maps saved per run, scored, reported, rescored."""

from __future__ import annotations

import json

import numpy as np

from benchmarks.nih_tree import write_tree
from conftest import REPO_ROOT, run_harness

SMALL = ["--workers", "null", "--epochs", "1", "--image-size", "64", "--batch-size", "8", "--bootstrap", "200"]


def test_phantom_runs_save_maps_of_the_boxed_test_images_and_the_report_scores_them(tmp_path):
    out = tmp_path / "results"
    result = run_harness(["benchmark", *SMALL, "--patients", "60", "--seeds", "0,1", "--out", str(out)], REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = out.iterdir()
    metrics = json.loads((run / "metrics.json").read_text())["workers"]["null"]
    boxes = np.load(run / "localization" / "boxes.npy")
    test = np.load(run / "labels" / "test_indices.npy")
    boxed_test = np.intersect1d(test, boxes[:, 0])
    assert len(boxed_test) > 0
    for saved_run in metrics["runs"]:
        localization = saved_run["localization"]
        assert localization["images"]["test"] == len(boxed_test) and localization["feature_map"] == [2, 2]
        with np.load(run / localization["folder"] / "test.npz") as maps:
            assert np.array_equal(maps["sample_index"], boxed_test)
            assert maps["cams"].shape == (len(boxed_test), 14, 2, 2) and maps["cams"].dtype == np.float32
        assert (run / localization["folder"] / "validation.npz").exists()
    summary = json.loads((run / "localization.json").read_text())
    assert summary["workers"]["null"]["runs"] == 2 and summary["images"] == len(boxed_test)
    assert summary["rules"]["threshold"] == "tuned"
    report = (run / "report.md").read_text()
    assert "## Where each worker looks: localisation" in report and "chance: random point" in report
    assert "![Localisation gallery](plots/localization_gallery.png)" in report
    assert (run / "plots" / "localization_gallery.png").stat().st_size > 10_000
    html = (run / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 6

    rescored = run_harness(["report", str(run), "--cam-threshold", "0.3", "--cam-components", "largest"], REPO_ROOT)
    assert rescored.returncode == 0, rescored.stderr[-3000:]
    again = json.loads((run / "localization.json").read_text())
    assert again["rules"]["threshold"] == "0.3" and again["rules"]["components"] == "largest"
    assert again["workers"]["null"]["thresholds"]["Nodule"] == [0.3, 0.3]


def test_localize_off_saves_no_maps_and_on_without_boxes_is_refused(tmp_path):
    out = tmp_path / "off"
    result = run_harness(["benchmark", *SMALL, "--patients", "40", "--seeds", "0", "--localize", "off",
                          "--out", str(out)], REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = out.iterdir()
    assert not (run / "cams").exists() and not (run / "localization.json").exists()
    assert "## Where each worker looks" not in (run / "report.md").read_text()

    root = tmp_path / "nih"
    write_tree(root, patients=20, images_per_patient=2, image_size=64)  # no BBox_List_2017.csv
    refused = run_harness(["benchmark", *SMALL, "--dataset", f"nih:{root}", "--seeds", "0", "--localize",
                           "--out", str(tmp_path / "refused")], REPO_ROOT)
    assert refused.returncode == 2 and "--localize: " in refused.stderr and "BBox_List_2017.csv" in refused.stderr
    assert not (tmp_path / "refused").exists()


def test_an_nih_tree_with_boxes_reports_localisation_of_its_boxed_test_images(tmp_path):
    root = tmp_path / "nih"
    write_tree(root, patients=40, images_per_patient=3, image_size=64, boxes=True)
    out = tmp_path / "results"
    result = run_harness(["benchmark", *SMALL, "--dataset", f"nih:{root}", "--seeds", "0", "--out", str(out)],
                         REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = out.iterdir()
    test_names = set((root / "test_list.txt").read_text().split())
    summary = json.loads((run / "localization.json").read_text())
    samples = json.loads((run / "labels" / "samples.json").read_text())["test"]["sample_ids"]
    boxed = {line.split(",")[0] for line in (root / "BBox_List_2017.csv").read_text().splitlines()[1:]}
    assert summary["images"] == len(boxed & test_names & set(samples)) > 0
    assert "## Where each worker looks: localisation" in (run / "report.md").read_text()
