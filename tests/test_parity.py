"""Parity: the comparison's arithmetic, and `harness parity` end to end (pass, and fail with exit 1)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import REPO_ROOT, run_harness
from harness.report.parity_tables import parity_lines
from harness.training.parity import Probe, Tolerances, compare, parity_inputs, relative_difference

COUNTS = (100, 10)


def make_probe(worker: str, logits_scale: float = 1.0, loss_shift: float = 0.0, counts=COUNTS) -> Probe:
    logits = np.linspace(-50, 50, 28, dtype=np.float32).reshape(2, 14)
    losses = tuple(0.7 - 0.01 * step + loss_shift for step in range(20))
    return Probe(worker, *counts, logits * logits_scale, losses, logits, b"")


def test_relative_difference_is_scaled_by_the_largest_magnitude():
    a = np.array([100.0, 1.0])
    assert relative_difference(a, a + [0.0, 0.01]) == pytest.approx(1e-4)
    assert relative_difference(a, a) == 0.0
    assert relative_difference(a, np.zeros(3)) == float("inf")


def test_identical_probes_pass():
    summary = compare([make_probe("a"), make_probe("b"), make_probe("c")], COUNTS, [])
    assert summary["passed"] and len(summary["pairs"]) == 3
    assert "Parity: PASSED" in parity_lines(summary)[0]


@pytest.mark.parametrize(
    ("other", "field"),
    [
        (make_probe("b", logits_scale=1 + 2e-4), "logits_relative"),  # beyond 1e-4
        (make_probe("b", loss_shift=1e-4), "first_loss_relative"),  # 1.4e-4 relative, beyond 1e-5
        (make_probe("b", counts=(100, 11)), None),  # one BatchNorm buffer too many
    ],
)
def test_each_tolerance_fails_the_summary(other, field):
    summary = compare([make_probe("a"), other], COUNTS, [])
    assert not summary["passed"]
    if field:
        assert summary["pairs"][0][field] > getattr(Tolerances(), field)
    lines = "\n".join(parity_lines(summary))
    assert "FAILED" in lines and "NO" in lines


def test_losses_may_drift_within_one_percent_over_the_steps():
    drifting = make_probe("b")
    losses = list(drifting.losses)
    losses[-1] *= 1.009  # last step 0.9% apart: allowed
    ok = compare([make_probe("a"), Probe("b", *COUNTS, drifting.initial_logits, tuple(losses), drifting.trained_logits, b"")], COUNTS, [])
    assert ok["passed"]
    losses[-1] *= 1.01
    bad = compare([make_probe("a"), Probe("b", *COUNTS, drifting.initial_logits, tuple(losses), drifting.trained_logits, b"")], COUNTS, [])
    assert not bad["passed"] and bad["pairs"][0]["losses_relative_max"] > 0.01


def test_parity_inputs_are_fixed_by_the_seed():
    pixels = np.arange(50 * 4 * 4, dtype=np.uint8).reshape(50, 4, 4)
    labels = np.eye(50, 14, dtype=np.uint8)
    one = parity_inputs(pixels, labels, np.arange(50), seed=1, steps=3, batch_size=4)
    two = parity_inputs(pixels, labels, np.arange(50), seed=1, steps=3, batch_size=4)
    other = parity_inputs(pixels, labels, np.arange(50), seed=2, steps=3, batch_size=4)
    assert np.array_equal(one.eval_pixels, two.eval_pixels) and len(one.train_batches) == 3
    assert not np.array_equal(one.eval_pixels, other.eval_pixels)


SMALL = ["--patients", "40", "--image-size", "32", "--batch-size", "4", "--steps", "3", "--threads", "1"]


def test_parity_command_fails_with_exit_1_when_workers_disagree(tmp_path):
    # The null worker computes nothing, so it cannot agree with a real network.
    result = run_harness(["parity", "--workers", "null", *SMALL, "--json", str(tmp_path / "p.json")], REPO_ROOT)
    assert result.returncode == 1, result.stderr
    assert "Parity: FAILED" in result.stdout and "NO (expected 23,536,718 / 53,120)" in result.stdout
    assert json.loads((tmp_path / "p.json").read_text())["passed"] is False


@pytest.mark.framework
def test_parity_command_passes_for_all_workers(tmp_path):
    # Parity's own image size and batch (64 px, 16 images): at 32 px and 4 images fp32 is itself
    # 3e-5 away from the float64 loss, beyond the first-loss tolerance.
    small = ["--patients", "40", "--steps", "3", "--threads", "1"]
    result = run_harness(["parity", "--workers", "all", *small, "--json", str(tmp_path / "p.json")], REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "p.json").read_text())
    workers = [count["worker"] for count in summary["counts"]]
    assert {"pytorch", "tensorflow", "keras"} <= set(workers)
    assert len(summary["pairs"]) == len(workers) * (len(workers) - 1) // 2
    assert len(summary["cross_loads"]) == len(workers) * (len(workers) - 1)
    assert "Parity: PASSED" in result.stdout


def test_own_noise_widens_the_allowance_but_an_early_bug_still_fails():
    # Each worker's nudged run drifts 5% by step 10 (chaos), so later steps may differ by 15%...
    base = [0.7 - 0.01 * step for step in range(20)]
    noisy = tuple(x * (1 + (0.05 if step >= 10 else 1e-6)) for step, x in enumerate(base))
    a = Probe("a", *COUNTS, np.ones((2, 14)), tuple(base), np.ones((2, 14)), b"", noisy)
    late = tuple(x * (1.12 if step >= 10 else 1.0) for step, x in enumerate(base))
    b = Probe("b", *COUNTS, np.ones((2, 14)), late, np.ones((2, 14)), b"", noisy)
    assert compare([a, b], COUNTS, [])["passed"]
    # ...but a 3% difference at step 2, where the own noise is 1e-6, is a real difference.
    early = tuple(x * (1.03 if step == 2 else 1.0) for step, x in enumerate(base))
    c = Probe("c", *COUNTS, np.ones((2, 14)), early, np.ones((2, 14)), b"", tuple(x * (1 + 1e-6) for x in early))
    summary = compare([a, c], COUNTS, [])
    assert not summary["passed"] and summary["pairs"][0]["losses_allowed"][2] == pytest.approx(0.01)
