"""`harness benchmark` end to end on real dataset formats, with 2-fold cross-validation, two frameworks.

Two frameworks, not `--workers all`: what these tests judge is the harness's (reading each format, the
folds, one batch order for every worker, the report), and two workers show "every worker the same
batches" as well as four. Each framework's own side is judged by the conformance suite and by
tests/test_parity.py, which runs `--workers all`; the two XLA-compiled workers added half an hour of CPU
to the suite here (issue 19, sixth session: 978 s and 895 s for these two tests with all four).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.nih_tree import write_tree
from conftest import run_harness
from test_chestmnist import write_chestmnist

pytestmark = pytest.mark.framework
# The default cache: worker environments are shared with the other tests (each store is a few KB).
# The two frameworks whose workers start and train fastest on a CPU (no XLA compilation of ResNet-50).
WORKERS = ["pytorch", "tensorflow"]
FAST = ["--workers", ",".join(WORKERS), "--folds", "2", "--seeds", "0", "--epochs", "1", "--image-size", "32",
        "--batch-size", "8"]


def finished_run(out: Path) -> tuple[Path, dict, dict]:
    (run,) = out.iterdir()
    return run, json.loads((run / "run.json").read_text()), json.loads((run / "metrics.json").read_text())["workers"]


def assert_two_folds_on_identical_batches(run: Path, record: dict, metrics: dict) -> None:
    assert record["status"] == "completed"
    assert sorted(metrics) == WORKERS
    digests = {name: result["batch_order_sha256"] for name, result in metrics.items()}
    assert len({tuple(d) for d in digests.values()}) == 1 and len(digests["pytorch"]) == 2  # 2 folds x 1 epoch
    for result in metrics.values():
        assert [run["fold"] for run in result["runs"]] == [1, 2]
        aurocs = [run["test"]["macro_auroc"] for run in result["runs"]]
        assert result["test"]["macro_auroc"] == pytest.approx(np.mean(aurocs))
        assert result["test_std"]["macro_auroc"] == pytest.approx(np.std(aurocs, ddof=1))
    report = (run / "report.md").read_text()
    assert "## Runs" in report and " ± " in report
    assert "received byte-identical training batches" in report
    assert "random horizontal flip (p=0.5) and rotation uniformly within +-20 degrees" in report
    tests = [np.load(run / "labels" / f"fold{k}" / "test_indices.npy") for k in (1, 2)]
    assert np.array_equal(tests[0], tests[1])  # one held-out test set for every fold


def test_benchmark_two_frameworks_on_an_nih_tree_with_two_folds(tmp_path):
    root = tmp_path / "nih"
    rows = write_tree(root, patients=60, images_per_patient=[1, 2, 3, 6] * 15, image_size=48, layout="split",
                      boxes=True)
    bad = next(root.glob(f"images*/images/{rows[10].image_index}"))
    bad.write_bytes(bad.read_bytes()[:100])  # truncated: skipped and listed with --skip-bad
    out = tmp_path / "results"
    result = run_harness(["benchmark", *FAST, "--dataset", f"nih:{root}", "--skip-bad", "--out", str(out)],
                         tmp_path, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    parity = [line for line in result.stdout.splitlines() if line.startswith("parity of ")]
    assert parity == [f"parity of {', '.join(WORKERS)}: passed"], (parity, result.stdout[-3000:])
    run, record, metrics = finished_run(out)
    assert_two_folds_on_identical_batches(run, record, metrics)
    assert record["data"]["images"] == len(rows) - 1
    assert record["data"]["test_source"] == "the dataset's own test split"
    # BBox_List_2017.csv is read: every framework's maps of the boxed test images are scored and reported.
    localization = json.loads((run / "localization.json").read_text())
    assert sorted(localization["workers"]) == WORKERS and localization["cases"] > 0
    assert all(worker["runs"] == 2 for worker in localization["workers"].values())
    assert "## Where each worker looks: localisation" in (run / "report.md").read_text()
    test_names = set((root / "test_list.txt").read_text().split())
    samples = json.loads((run / "labels" / "samples.json").read_text())
    assert set(samples["test"]["sample_ids"]) == test_names - {rows[10].image_index}
    patient_of = dict(zip(fold1_indices(run), listed_patient_ids(samples)))
    for k in (1, 2):  # no patient on two sides of a fold, nor in a fold and the test set
        parts = {part: {patient_of[i] for i in np.load(run / "labels" / f"fold{k}" / f"{part}_indices.npy")}
                 for part in ("train", "validation", "test")}
        assert parts["train"].isdisjoint(parts["validation"]) and parts["test"].isdisjoint(parts["train"] | parts["validation"])
    report = (run / "report.md").read_text()
    assert f"Skipped 1 input(s): `images_001/images/{rows[10].image_index}`" in report
    assert ("Read from `Data_Entry_2017.csv` (2017 labels), images in `images_NNN/images/`, "
            "the official train_val_list.txt / test_list.txt.") in report


def fold1_indices(run: Path) -> list[int]:
    """Store indices of the samples listed in samples.json, in its order (train, validation, test of fold 1)."""
    return [int(i) for part in ("train", "validation", "test")
            for i in np.load(run / "labels" / "fold1" / f"{part}_indices.npy")]


def listed_patient_ids(samples: dict) -> list[int]:
    return [p for part in ("train", "validation", "test") for p in samples[part]["patient_ids"]]


def test_benchmark_two_frameworks_on_chestmnist_files_with_two_folds(tmp_path):
    write_chestmnist(tmp_path / "chestmnist.npz", size=28)
    out = tmp_path / "results"
    result = run_harness(["benchmark", *FAST, "--dataset", f"chestmnist:{tmp_path / 'chestmnist.npz'}", "--out", str(out)],
                         tmp_path, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    run, record, metrics = finished_run(out)
    assert_two_folds_on_identical_batches(run, record, metrics)
    assert record["data"]["images"] == 68 and record["data"]["split"]["test"]["images"] == 16
    report = (run / "report.md").read_text()
    assert "ChestMNIST carries no patient ids" in report and "resized from 28x28 to 32x32" in report
