"""The localisation summary: estimates over runs and cases, the paired margin over chance (a perfect
map beats it, pure noise does not), verdicts that never call one run per worker significant, and
intervals fixed by the seed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.evaluation.localization import CaseScores, localization_cases, score_cases
from harness.evaluation.localization_statistics import summarise

SIZE, LABELS, IMAGES = 24, 14, 160
NAMES = [f"finding{j}" for j in range(LABELS)]


def _test_set() -> tuple[np.ndarray, np.ndarray]:
    """One box per image (label i % 8, 6..13 pixels a side), two images per patient."""
    rng = np.random.default_rng(0)
    boxes = []
    for i in range(IMAGES):
        w, h = rng.integers(6, 14, size=2)
        boxes.append((100 + i, i % 8, rng.integers(0, SIZE - w + 1), rng.integers(0, SIZE - h + 1), w, h))
    return np.array(boxes, dtype=np.int32), np.arange(IMAGES) // 2


def _scores(kind: str, seed: int = 0) -> tuple[CaseScores, np.ndarray]:
    """Maps at image resolution (upsampling is the identity): "perfect" is 1 on the box and 0 elsewhere;
    "noise" is uniform noise, whose maximum is a uniformly random pixel, so its expected hit rate is the
    box's area fraction, exactly the random-point baseline."""
    boxes, patients = _test_set()
    cams = np.zeros((IMAGES, LABELS, SIZE, SIZE), dtype=np.float32)
    rng = np.random.default_rng(seed)
    for i, (_, label, x, y, w, h) in enumerate(boxes):
        if kind == "perfect":
            cams[i, label, y : y + h, x : x + w] = 1.0
        else:
            cams[i, label] = rng.random((SIZE, SIZE))
    cases = localization_cases(cams, 100 + np.arange(IMAGES), boxes, SIZE)
    return score_cases(cases, 0.5, "all"), patients[cases.image]


def test_a_perfect_map_beats_the_random_point_and_pure_noise_does_not() -> None:
    perfect, patients = _scores("perfect")
    noise, _ = _scores("noise", seed=1)
    summary = summarise({"perfect": [perfect], "noise": [noise]}, patients, NAMES, resamples=1000, seed=0)
    chance = summary["baselines"]["metrics"]["random_point_hit_rate"]
    assert summary["workers"]["perfect"]["metrics"]["hit_rate"]["estimate"] == 1.0
    assert summary["workers"]["perfect"]["metrics"]["mask_iou"]["estimate"] == pytest.approx(1.0)
    margin = summary["workers"]["perfect"]["hit_rate_margin"]
    assert margin["excludes_zero"] and margin["low"] > 0.5
    assert margin["estimate"] == pytest.approx(1.0 - chance["estimate"])
    # Paired on the same replicates: 1 - chance, replicate by replicate, so the interval mirrors chance's.
    assert margin["low"] == pytest.approx(1.0 - chance["high"]) and margin["high"] == pytest.approx(1.0 - chance["low"])
    noise_margin = summary["workers"]["noise"]["hit_rate_margin"]
    assert not noise_margin["excludes_zero"]
    assert noise_margin["low"] < 0 < noise_margin["high"]
    assert abs(noise_margin["estimate"]) < 0.05
    assert summary["cases"] == IMAGES and summary["patients"] == IMAGES // 2
    json.dumps(summary, allow_nan=False)  # plain JSON: None for NaN


def test_one_run_per_worker_is_never_called_different_however_large_the_gap() -> None:
    perfect, patients = _scores("perfect")
    noise, _ = _scores("noise", seed=1)
    summary = summarise({"perfect": [perfect], "noise": [noise]}, patients, NAMES, resamples=200)
    pairs = summary["comparison"]["pairs"]
    assert [pair["metric"] for pair in pairs] == ["hit_rate", "mask_iou"]
    assert pairs[0]["difference"] > 0.7
    assert all(pair["verdict"] == "undetermined" for pair in pairs)
    assert summary["workers"]["perfect"]["metrics"]["hit_rate"]["covers"] == "test set"
    assert any("test set's sampling noise only" in note for note in summary["notes"])


def test_three_runs_call_a_large_difference_different_against_both_noises() -> None:
    perfect, patients = _scores("perfect")
    noise = [_scores("noise", seed=seed)[0] for seed in (1, 2, 3)]
    summary = summarise({"perfect": [perfect] * 3, "noise": noise}, patients, NAMES, resamples=300, seed=0)
    hit_rate = summary["comparison"]["pairs"][0]
    assert hit_rate["metric"] == "hit_rate" and hit_rate["verdict"] == "different" and hit_rate["runs"] == 3
    interval = summary["workers"]["noise"]["metrics"]["hit_rate"]
    assert interval["covers"] == "test set and runs" and interval["run_sd"] > 0
    hits = np.mean([run.hit.mean() for run in noise])
    assert interval["estimate"] == pytest.approx(hits)
    # Runs that agree exactly add no spread: the interval of identical runs is the test set's share alone.
    perfect_iou = summary["workers"]["perfect"]["metrics"]["mask_iou"]
    assert perfect_iou["run_sd"] == 0.0


def test_estimates_average_cases_then_runs_and_findings_without_cases_are_none() -> None:
    # Four images of one finding, the true box (0, 0, 4, 4) of an 8-pixel image: chance 16 / 64.
    boxes = np.array([(i, 0, 0, 0, 4, 4) for i in range(4)], dtype=np.int32)

    def run(inside: int) -> CaseScores:
        cams = np.zeros((4, LABELS, 8, 8), dtype=np.float32)
        for i in range(4):
            cams[i, 0, (1 if i < inside else 6), 1] = 1.0  # the peak in the box for the first `inside` images
        return score_cases(localization_cases(cams, np.arange(4), boxes, 8))

    summary = summarise({"w": [run(2), run(1)]}, np.array(["p0", "p0", "p1", "p2"]), NAMES, resamples=100)
    worker = summary["workers"]["w"]
    assert worker["metrics"]["hit_rate"]["estimate"] == pytest.approx((0.5 + 0.25) / 2)
    assert worker["hit_rate_margin"]["estimate"] == pytest.approx(0.375 - 0.25)
    assert summary["baselines"]["metrics"]["random_point_hit_rate"]["estimate"] == pytest.approx(0.25)
    assert worker["findings"]["finding0"]["cases"] == 4
    assert worker["findings"]["finding0"]["metrics"]["hit_rate"]["estimate"] == pytest.approx(0.375)
    assert worker["findings"]["finding1"]["cases"] == 0
    assert worker["findings"]["finding1"]["metrics"]["hit_rate"]["estimate"] is None
    assert worker["thresholds"]["finding0"] == [0.5, 0.5]
    assert summary["comparison"]["pairs"] == []
    assert "iobb_accuracy@0.5" in summary["metrics"] and "centred_box_iou_afp@0.9" in summary["baseline_metrics"]


def test_intervals_are_the_same_for_the_same_seed_and_move_with_another() -> None:
    noise, patients = _scores("noise", seed=1)
    first = summarise({"noise": [noise]}, patients, NAMES, resamples=200, seed=7)
    again = summarise({"noise": [noise]}, patients, NAMES, resamples=200, seed=7)
    other = summarise({"noise": [noise]}, patients, NAMES, resamples=200, seed=8)
    assert json.dumps(first) == json.dumps(again)
    a, b = first["workers"]["noise"]["metrics"]["hit_rate"], other["workers"]["noise"]["metrics"]["hit_rate"]
    assert a["estimate"] == b["estimate"] and (a["low"], a["high"]) != (b["low"], b["high"])


def test_summary_refuses_runs_scored_on_different_cases_and_unequal_run_counts() -> None:
    perfect, patients = _scores("perfect")
    boxes, _ = _test_set()
    cams = np.zeros((IMAGES - 1, LABELS, SIZE, SIZE), dtype=np.float32)
    fewer = score_cases(localization_cases(cams, 100 + np.arange(IMAGES - 1), boxes, SIZE))
    with pytest.raises(ValueError, match="worker 'b', run 0: its cases"):
        summarise({"a": [perfect], "b": [fewer]}, patients, NAMES, resamples=10)
    with pytest.raises(ValueError, match="different numbers of runs"):
        summarise({"a": [perfect], "b": [perfect, perfect]}, patients, NAMES, resamples=10)
