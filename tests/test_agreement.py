"""Prediction churn on logits small enough to count the differing images and cells by hand, its words
in the report, and both new results (churn, time to target) through a real run directory."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import REPO_ROOT, SMALL_RUN, run_harness
from harness.evaluation.agreement import RunLogits, between_workers, calls, churn, prediction_churn, within_worker
from harness.records.run_directory import RunDirectory
from harness.report.assembly import rescore, write_report
from harness.report.beyond_auroc import churn_lines, time_to_target_lines


def flipped(cells: list[tuple[int, int]], shape: tuple[int, int] = (4, 3)) -> np.ndarray:
    """Logits of +1 everywhere (called present) but -1 (called absent) at `cells`."""
    logits = np.ones(shape, dtype=np.float32)
    for cell in cells:
        logits[cell] = -1.0
    return logits


def test_a_label_is_called_present_from_probability_one_half_that_is_logit_zero():
    assert calls(np.array([[0.0, -1e-6, 3.0, np.nan]])).tolist() == [[True, False, True, False]]


def test_churn_counts_images_with_any_differing_label_and_differing_cells():
    # 4 images x 3 labels: image 0 differs in one label, image 2 in all three; images 1 and 3 agree.
    image, label = churn(flipped([]), flipped([(0, 1), (2, 0), (2, 1), (2, 2)]))
    assert image == 2 / 4 and label == 4 / 12
    assert churn(flipped([(1, 1)]), flipped([(1, 1)])) == (0.0, 0.0)  # the same calls, whatever the logits' size
    assert churn(np.full((4, 3), 0.2), np.full((4, 3), 7.0)) == (0.0, 0.0)


def test_churn_refuses_runs_that_did_not_score_the_same_images():
    with pytest.raises(ValueError, match=r"logits of shape \(4, 3\) and \(5, 3\)"):
        churn(flipped([]), flipped([], (5, 3)))


def test_between_workers_pairs_runs_by_seed_and_fold_not_by_position():
    a = [RunLogits(0, 1, flipped([])), RunLogits(0, 2, flipped([])), RunLogits(1, 1, flipped([])),
         RunLogits(1, 2, flipped([]))]
    # b lists its runs in another order; only its (seed 1, fold 2) run differs from a's: 1 image, 2 cells.
    b = [RunLogits(1, 2, flipped([(3, 0), (3, 2)])), RunLogits(1, 1, flipped([])), RunLogits(0, 2, flipped([])),
         RunLogits(0, 1, flipped([]))]
    result = between_workers(a, b)
    assert result["run_pairs"] == 4
    assert result["image_churn"] == pytest.approx((0 + 0 + 0 + 1 / 4) / 4)
    assert result["label_churn"] == pytest.approx((2 / 12) / 4)
    assert (result["image_churn_min"], result["image_churn_max"]) == (0.0, 0.25)
    # A run without a partner (b stopped before seed 1, fold 2) is left out, not paired with another.
    assert between_workers(a, b[1:])["run_pairs"] == 3 and between_workers(a, b[1:])["image_churn"] == 0.0


def test_within_a_worker_pairs_every_two_seeds_on_the_same_fold_never_two_folds():
    image_3 = [(3, 0), (3, 1), (3, 2)]
    runs = [RunLogits(0, 1, flipped([])), RunLogits(1, 1, flipped([(0, 0)])),
            RunLogits(2, 1, flipped([(0, 0), (1, 0)])),
            RunLogits(0, 2, flipped(image_3)), RunLogits(1, 2, flipped(image_3))]
    result = within_worker(runs)
    # Fold 1: seeds 0-1 differ on image 0 (1 cell), 0-2 on images 0, 1 (2 cells), 1-2 on image 1 (1 cell).
    # Fold 2: seeds 0-1 agree. Four pairs; the fold-1 against fold-2 runs (which differ) are never paired.
    assert result["run_pairs"] == 4 and result["seeds"] == 3 and result["note"] is None
    assert result["image_churn"] == pytest.approx((1 / 4 + 2 / 4 + 1 / 4 + 0) / 4)
    assert result["label_churn"] == pytest.approx((1 / 12 + 2 / 12 + 1 / 12 + 0) / 4)
    assert (result["image_churn_min"], result["image_churn_max"]) == (0.0, 0.5)


def test_a_worker_with_one_seed_has_no_within_churn_and_says_why():
    # Two folds of one seed: different training data, so not a seed-to-seed comparison.
    result = within_worker([RunLogits(0, 1, flipped([])), RunLogits(0, 2, flipped([(0, 0)]))])
    assert result["run_pairs"] == 0 and result["seeds"] == 1
    assert result["image_churn"] is None and result["label_churn"] is None and result["image_churn_max"] is None
    assert result["note"] == "one training seed: not measured; run with several --seeds"


def test_prediction_churn_gives_every_pair_of_workers_and_every_worker_with_itself():
    runs = {
        "keras": [RunLogits(0, None, flipped([])), RunLogits(1, None, flipped([(0, 0)]))],
        "pytorch": [RunLogits(0, None, flipped([(0, 0), (1, 1)])), RunLogits(1, None, flipped([(0, 0)]))],
        "tensorflow": [RunLogits(0, None, flipped([]))],
    }
    result = prediction_churn(runs)
    assert (result["images"], result["labels"]) == (4, 3)
    assert "logit >= 0" in result["threshold"] and "Image-level churn" in result["definition"]
    assert [entry["workers"] for entry in result["between"]] == [
        ["keras", "pytorch"], ["keras", "tensorflow"], ["pytorch", "tensorflow"]]
    keras_pytorch, keras_tensorflow, pytorch_tensorflow = result["between"]
    # keras vs pytorch: seed 0 differs on images 0 and 1, seed 1 agrees.
    assert keras_pytorch["run_pairs"] == 2 and keras_pytorch["image_churn"] == pytest.approx((2 / 4 + 0) / 2)
    assert keras_tensorflow["run_pairs"] == 1 and keras_tensorflow["image_churn"] == 0.0
    assert pytorch_tensorflow["run_pairs"] == 1 and pytorch_tensorflow["label_churn"] == pytest.approx(2 / 12)
    assert result["within"]["keras"]["image_churn"] == 1 / 4 and result["within"]["pytorch"]["image_churn"] == 1 / 4
    assert result["within"]["tensorflow"]["image_churn"] is None
    json.dumps(result)  # plain data for metrics.json


def test_prediction_churn_refuses_runs_of_different_test_sets():
    with pytest.raises(ValueError, match=r"differ in shape \[\(4, 3\), \(5, 3\)\]"):
        prediction_churn({"a": [RunLogits(0, None, flipped([]))], "b": [RunLogits(0, None, flipped([], (5, 3)))]})


def _entry(image: float | None, label: float | None, pairs: int, low: float | None = None,
           high: float | None = None) -> dict:
    return {"run_pairs": pairs, "image_churn": image, "label_churn": label, "image_churn_min": low,
            "image_churn_max": high, "label_churn_min": label, "label_churn_max": label}


def test_the_churn_section_reads_as_a_sentence_a_clinician_can_quote():
    churn_result = {
        "images": 25596, "labels": 14,
        "between": [{"workers": ["keras", "pytorch"], **_entry(0.041, 0.0052, 3, 0.039, 0.043)}],
        "within": {"keras": {**_entry(0.038, 0.0049, 3, 0.036, 0.040), "seeds": 3, "note": None},
                   "pytorch": {**_entry(0.045, 0.0055, 3, 0.044, 0.046), "seeds": 3, "note": None}},
    }
    lines = churn_lines(churn_result)
    assert ("keras and pytorch disagree on 4.1% of test images; two seeds of the same framework disagree on "
            "3.8%–4.5%.") in lines
    assert ("| keras vs pytorch | between workers (same seed and fold) | 4.1% (3.9%–4.3%) | 0.52% (0.52%–0.52%) "
            "| 3 |") in lines
    assert ("| keras vs keras | within, across training seeds (same fold) | 3.8% (3.6%–4.0%) | 0.49% (0.49%–0.49%) "
            "| 3 |") in lines
    assert any("25,596 test images" in line and "one of its 14 findings" in line for line in lines)


def test_the_churn_sentence_names_every_pair_and_says_when_seeds_were_not_compared():
    note = "one training seed: not measured; run with several --seeds"
    one_seed = {**_entry(None, None, 0), "seeds": 1, "note": note}
    churn_result = {
        "images": 100, "labels": 14,
        "between": [{"workers": ["a", "b"], **_entry(0.02, 0.002, 1)},
                    {"workers": ["a", "c"], **_entry(0.03, 0.003, 1)},
                    {"workers": ["b", "c"], **_entry(0.05, 0.004, 1)}],
        "within": {"a": one_seed, "b": one_seed, "c": one_seed},
    }
    lines = churn_lines(churn_result)
    assert ("a and b disagree on 2.0% of test images, a and c on 3.0%, b and c on 5.0%; two seeds of the same "
            "framework were not compared (one training seed; run with several --seeds).") in lines
    assert f"| a vs a | within, across training seeds (same fold) | n/a ({note}) | n/a | 0 |" in lines


def test_the_time_to_target_section_states_the_target_and_how_it_was_chosen():
    result = {
        "target": 0.665, "fraction": 0.95, "lowest_worker": "pytorch",
        "best_validation_macro_auroc": {"keras": 0.87, "pytorch": 0.70},
        "workers": {
            "keras": {"reached": 2, "runs": 2, "epochs": {"median": 1.5, "min": 1.0, "max": 2.0, "n": 2},
                      "seconds": {"median": 1700.0, "min": 1000.0, "max": 2400.0, "n": 2}},
            "pytorch": {"reached": 0, "runs": 1, "epochs": {"median": None, "min": None, "max": None, "n": 0},
                        "seconds": {"median": None, "min": None, "max": None, "n": 0}},
        },
    }
    lines = time_to_target_lines(result)
    assert lines[0].startswith("**Time to target.** Target: validation macro AUROC 0.665, 95% of the lowest worker's "
                               "best (pytorch: 0.700;")
    assert "| keras | 0.870 | 2 of 2 | 1.5 (1–2) | 1,700.0 (1,000.0–2,400.0) |" in lines
    assert "| pytorch | 0.700 | 0 of 1 | n/a | n/a |" in lines
    assert time_to_target_lines({**result, "target": None})[0].startswith("**Time to target.** No epoch recorded")


def test_a_benchmark_and_a_rescored_old_run_directory_get_churn_and_time_to_target(tmp_path):
    out = tmp_path / "results"
    result = run_harness(["benchmark", "--workers", "null", *SMALL_RUN, "--epochs", "2", "--seeds", "0,1",
                          "--bootstrap", "0", "--out", str(out)], REPO_ROOT)
    assert result.returncode == 0, result.stderr
    (run,) = out.iterdir()
    images = len(np.load(run / "labels" / "test.npy"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert list(metrics) == ["workers", "churn", "time_to_target"]
    # The null worker predicts zero logits: every label called present in every run, so no churn.
    assert metrics["churn"]["between"] == [] and metrics["churn"]["images"] == images
    within = metrics["churn"]["within"]["null"]
    assert (within["run_pairs"], within["seeds"], within["image_churn"], within["label_churn"]) == (1, 2, 0.0, 0.0)
    # Zero logits score a validation AUROC of 0.5 every epoch: target 0.475, reached at epoch 1.
    time = metrics["time_to_target"]
    assert time["target"] == pytest.approx(0.475) and time["lowest_worker"] == "null"
    epoch_one = {row["seed"]: float(row["seconds"]) for row in RunDirectory(run).read_epochs() if row["epoch"] == "1"}
    assert time["workers"]["null"]["per_run"] == [
        {"seed": 0, "fold": None, "epoch": 1, "seconds": epoch_one["0"]},
        {"seed": 1, "fold": None, "epoch": 1, "seconds": epoch_one["1"]}]
    report = (run / "report.md").read_text()
    assert "## Agreement and time to target" in report
    assert "| null vs null | within, across training seeds (same fold) | 0.0% | 0.00% | 1 |" in report
    assert "Two seeds of null disagree on 0.0% of test images." in report
    assert "Target: validation macro AUROC 0.475, 95% of the lowest worker's best (null: 0.500;" in report
    assert "| null | 0.500 | 2 of 2 | 1 (1–1) |" in report
    assert report.index("## Agreement and time to target") < report.index("## AUROC per label")

    # An older run directory: no churn nor time to target yet, and a second worker "twin" whose runs are
    # listed in the other order (pairing is by seed, not position), with hand-made logits and epochs.
    del metrics["churn"], metrics["time_to_target"]
    twin = json.loads(json.dumps(metrics["workers"]["null"]))
    for entry in twin["runs"]:
        entry["logits"] = entry["logits"].replace("logits/null", "logits/twin")
    twin["runs"].reverse()
    metrics["workers"]["twin"] = twin
    (run / "metrics.json").write_text(json.dumps(metrics))
    shutil.copytree(run / "logits" / "null", run / "logits" / "twin")
    seed0, seed1 = (np.load(run / "logits" / "twin" / f"seed{s}" / "test.npy") for s in (0, 1))
    seed0[0:3, 0] = -1.0  # images 0-2, label 0 called absent
    seed1[0, :] = -1.0  # image 0, every label called absent
    np.save(run / "logits" / "twin" / "seed0" / "test.npy", seed0)
    np.save(run / "logits" / "twin" / "seed1" / "test.npy", seed1)
    directory = RunDirectory(run)
    curves = {0: ([0.5, 0.7], [1.0, 2.0]), 1: ([0.3, 0.9], [3.0, 4.0])}
    for row in [row for row in directory.read_epochs() if row["worker"] == "null"]:
        aurocs, seconds = curves[int(row["seed"])]
        epoch = int(row["epoch"])
        directory.append_epoch({**row, "worker": "twin", "validation_macro_auroc": aurocs[epoch - 1],
                                "seconds": seconds[epoch - 1]}, f"twin/seed{row['seed']}")

    rescore(run, bootstrap=0)
    rescored = json.loads((run / "metrics.json").read_text())
    (between,) = rescored["churn"]["between"]
    cells = images * 14
    assert between["workers"] == ["null", "twin"] and between["run_pairs"] == 2
    assert between["image_churn"] == pytest.approx((3 / images + 1 / images) / 2)
    assert between["label_churn"] == pytest.approx((3 / cells + 14 / cells) / 2)
    # twin's seed 0 against its seed 1: images 0-2 differ; cells: image 0 labels 1-13, images 1-2 label 0.
    assert rescored["churn"]["within"]["twin"]["image_churn"] == pytest.approx(3 / images)
    assert rescored["churn"]["within"]["twin"]["label_churn"] == pytest.approx(15 / cells)
    # twin's best: mean(0.7, 0.9) = 0.8; null's 0.5 is the lowest, so the target stays 0.475.
    time = rescored["time_to_target"]
    assert time["target"] == pytest.approx(0.475)
    assert time["best_validation_macro_auroc"]["twin"] == pytest.approx(0.8)
    assert time["workers"]["twin"]["per_run"] == [{"seed": 1, "fold": None, "epoch": 2, "seconds": 7.0},
                                                  {"seed": 0, "fold": None, "epoch": 1, "seconds": 1.0}]

    report = write_report(run).read_text()
    low, high, mean = f"{1 / images:.1%}", f"{3 / images:.1%}", f"{2 / images:.1%}"
    assert f"| null vs twin | between workers (same seed and fold) | {mean} ({low}–{high}) |" in report
    assert (f"null and twin disagree on {mean} of test images; two seeds of the same framework disagree on "
            f"0.0%–{high}.") in report
    assert "| twin | 0.800 | 2 of 2 | 1.5 (1–2) | 4.0 (1.0–7.0) |" in report
