"""The CLI end to end with the null worker: files written, report rebuilt, clear errors."""

from __future__ import annotations

import csv
import json

import pytest

import numpy as np

from conftest import REPO_ROOT, SMALL_RUN, run_harness


def test_benchmark_writes_every_result_file(tmp_path):
    out = tmp_path / "results"
    result = run_harness(["benchmark", "--workers", "null", "--epochs", "2", "--out", str(out), *SMALL_RUN], REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert "null: test macro AUROC 0.5000" in result.stdout
    (run,) = out.iterdir()
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed"
    assert record["config"]["epochs"] == 2 and record["config"]["seed"] == 0
    assert record["provenance"]["host"]["cpu_count"] >= 1
    assert record["workers"]["null"]["reported"]["framework_versions"]["python"]
    assert len(record["data"]["content_sha256"]) == 64
    rows = list(csv.DictReader((run / "epochs.csv").open()))
    assert [(r["worker"], r["epoch"]) for r in rows] == [("null", "1"), ("null", "2")]
    assert len(rows[0]["batch_order_sha256"]) == 64 and rows[0]["batch_order_sha256"] != rows[1]["batch_order_sha256"]
    test_labels = np.load(run / "labels" / "test.npy")
    test_logits = np.load(run / "logits" / "null" / "test.npy")
    assert test_logits.shape == test_labels.shape and test_logits.dtype == np.float32
    assert (run / "logits" / "null" / "validation_epoch_002.npy").exists()
    metrics = json.loads((run / "metrics.json").read_text())["workers"]["null"]
    assert metrics["test"]["macro_auroc"] == 0.5
    assert metrics["parameters"] == {"trainable": 14, "non_trainable": 0}
    report = (run / "report.md").read_text()
    assert "| null |" in report and "## AUROC per label" in report and "Hernia" in report
    assert "## Training decisions" in report and "| null | seed 0 | 2 | 1 (0.6931) | no | none |" in report
    assert (run / "epochs" / "null" / "run.csv").read_text() == (run / "epochs.csv").read_text()
    html = (run / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 6 and 'src="plots/' not in html
    assert {path.name for path in (run / "plots").iterdir()} == {
        "per_label_auroc.png", "roc_curves.png", "learning_curves.png", "paired_runs.png", "throughput.png",
        "localization_gallery.png"}  # the phantom has boxes: --localize is on by default
    assert "### Every run, paired across workers" in report  # one worker: no comparison, with the other figures

    # `harness report` rescores the saved logits and rebuilds the same report.
    (run / "report.md").unlink()
    tampered = json.loads((run / "metrics.json").read_text())
    tampered["workers"]["null"]["test"]["macro_auroc"] = 0.123
    (run / "metrics.json").write_text(json.dumps(tampered))
    rebuilt = run_harness(["report", str(run)], REPO_ROOT)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert (run / "report.md").read_text() == report


def test_same_seed_runs_have_equal_data_and_batch_digests(tmp_path):
    digests = []
    for attempt, seed in enumerate((5, 5, 6)):
        out = tmp_path / f"run{attempt}"
        result = run_harness(["benchmark", "--workers", "null", "--epochs", "1", "--bootstrap", "0", "--seed", str(seed), "--out", str(out), *SMALL_RUN], REPO_ROOT)
        assert result.returncode == 0, result.stderr
        (run,) = out.iterdir()
        record = json.loads((run / "run.json").read_text())
        order = list(csv.DictReader((run / "epochs.csv").open()))[0]["batch_order_sha256"]
        digests.append((record["data"]["content_sha256"], order))
    assert digests[0] == digests[1]
    assert digests[0][0] != digests[2][0] and digests[0][1] != digests[2][1]


def test_shuffled_labels_control_is_marked_in_the_report(tmp_path):
    out = tmp_path / "results"
    result = run_harness(["benchmark", "--workers", "null", "--epochs", "1", "--shuffle-labels", "--out", str(out), *SMALL_RUN], REPO_ROOT)
    assert result.returncode == 0, result.stderr
    (run,) = out.iterdir()
    assert run.name.endswith("-shuffled-labels")
    assert "**Control run**" in (run / "report.md").read_text()


def test_unknown_worker_is_a_clear_error(tmp_path):
    result = run_harness(["benchmark", "--workers", "pytorhc", "--out", str(tmp_path)], REPO_ROOT)
    assert result.returncode == 2
    assert "--workers: unknown worker 'pytorhc' (known: jax, keras, null, pytorch, tensorflow)" in result.stderr


def test_bad_values_name_the_option(tmp_path):
    result = run_harness(["benchmark", "--workers", "null", "--epochs", "0", "--out", str(tmp_path)], REPO_ROOT)
    assert result.returncode == 2
    assert "--epochs: 0 must be at least 1" in result.stderr


def test_workers_list_shows_pinned_versions():
    result = run_harness(["workers", "list"], REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert "torch==2.14.1" in result.stdout
    assert "null" in result.stdout and "(not in 'all')" in result.stdout


def test_batch_larger_than_the_training_set_is_a_clear_error(tmp_path):
    result = run_harness(["benchmark", "--workers", "null", "--patients", "10", "--image-size", "32",
                          "--batch-size", "64", "--out", str(tmp_path)], REPO_ROOT)
    assert result.returncode == 2
    assert "--batch-size: 64 is more than the" in result.stderr and "training images" in result.stderr


def test_unwritable_results_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run_harness(["benchmark", "--workers", "null", *SMALL_RUN, "--out", str(blocker / "results")], REPO_ROOT)
    assert result.returncode == 1
    assert result.stderr.startswith("harness: error:") and "Traceback" not in result.stderr


def test_an_option_for_a_worker_not_in_the_run_is_a_clear_error(tmp_path):
    result = run_harness(["benchmark", "--workers", "null", "--option", "tensorflw.jit_compile=true",
                          "--out", str(tmp_path)], REPO_ROOT)
    assert result.returncode == 2
    assert "--option: 'tensorflw.jit_compile=true' is for worker 'tensorflw', which is not in this run (null)" in result.stderr
    malformed = run_harness(["parity", "--workers", "null", "--option", "jit_compile"], REPO_ROOT)
    assert malformed.returncode == 2 and "must look like WORKER.KEY=VALUE" in malformed.stderr


def test_folds_are_logged_saved_and_rescored_per_fold(tmp_path):
    out = tmp_path / "results"
    result = run_harness(["benchmark", "--workers", "null", "--folds", "2", "--epochs", "1", "--out", str(out), *SMALL_RUN], REPO_ROOT)
    assert result.returncode == 0, result.stderr
    (run,) = out.iterdir()
    rows = list(csv.DictReader((run / "epochs.csv").open()))
    assert [(r["worker"], r["fold"], r["epoch"]) for r in rows] == [("null", "1", "1"), ("null", "2", "1")]
    assert (run / "logits" / "null" / "fold2" / "test.npy").exists()
    assert (run / "cams" / "null" / "fold2" / "validation.npz").exists()  # each fold's maps, its own validation
    assert json.loads((run / "localization.json").read_text())["workers"]["null"]["runs"] == 2
    saved = json.loads((run / "metrics.json").read_text())["workers"]["null"]
    assert [run["fold"] for run in saved["runs"]] == [1, 2] and saved["test_std"]["macro_auroc"] == 0.0
    folds = json.loads((run / "run.json").read_text())["data"]["folds"]
    correction = json.loads((run / "significance.json").read_text())["comparison"]["fold_correction"]
    assert correction == {"folds": 2, "ratio": pytest.approx(sum(f["validation"]["images"] / f["train"]["images"]
                                                                 for f in folds) / 2)}

    tampered = json.loads((run / "metrics.json").read_text())
    tampered["workers"]["null"]["runs"][1]["test"]["macro_auroc"] = 0.99
    (run / "metrics.json").write_text(json.dumps(tampered))
    rebuilt = run_harness(["report", str(run)], REPO_ROOT)
    assert rebuilt.returncode == 0, rebuilt.stderr
    rescored = json.loads((run / "metrics.json").read_text())["workers"]["null"]
    assert rescored["runs"][1]["test"]["macro_auroc"] == 0.5 and rescored["test"]["macro_auroc"] == 0.5
    assert "| null | 0 | 2 | 0.500 |" in (run / "report.md").read_text()


def test_malformed_dataset_and_augment_values_name_the_option(tmp_path):
    for args, message in ((["--dataset", "nih"], "--dataset: nih needs the path to the data"),
                          (["--dataset", "imagenet:/x"], "--dataset: unknown 'imagenet:/x'"),
                          (["--augment", "flip,zoom"], "--augment: unknown item 'zoom'"),
                          (["--folds", "0"], "--folds: 0 must be within 1..20")):
        result = run_harness(["benchmark", "--workers", "null", *args], tmp_path)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
