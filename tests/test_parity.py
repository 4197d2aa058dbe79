"""Parity: the comparison's arithmetic, and `harness parity` end to end (pass, and fail with exit 1)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from conftest import REPO_ROOT, run_harness
from cxrbench_worker.neutral_weights import weights_from_bytes
from harness.config import BenchmarkConfig
from harness.evaluation.cams import class_activation_maps
from harness.models.weights.start import starting_weights
from harness.report.parity_tables import parity_lines
from harness.training.parity import Probe, Tolerances, compare, parity_inputs, probe, relative_difference
from harness.training.settings import configure_request

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


def test_parity_command_fails_as_stalled_when_a_step_outlasts_its_stall_timeout(tmp_path):
    # --stall-timeout is the watchdog's floor in `harness parity` as in `benchmark` (a first step that
    # compiles for minutes on a slow machine needs it raised; here a 1 s step outlasts 0.3 s).
    result = run_harness(["parity", "--workers", "null", *SMALL, "--stall-timeout", "0.3"], REPO_ROOT,
                         env={"CXRBENCH_NULL_STEP_SECONDS": "1"})
    assert result.returncode != 0
    assert "STALLED" in result.stderr and "limit 0.3 s" in result.stderr, result.stderr[-2000:]


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


def test_fp32_keeps_its_tolerances_and_is_the_default():
    assert Tolerances.for_precision("fp32") == Tolerances() == Tolerances(1e-4, 1e-5, 1e-2, 1e-4)
    summary = compare([make_probe("a"), make_probe("b")], COUNTS, [])
    assert summary["precision"] == "fp32" and summary["tolerances"]["logits_relative"] == 1e-4
    assert summary["own_deviations"] == []


def test_mixed_tolerances_come_from_the_unit_roundoff():
    bf16, fp16 = Tolerances.for_precision("bf16-mixed"), Tolerances.for_precision("fp16-mixed")
    assert (bf16.logits_relative, bf16.first_loss_relative) == (2 * 2**-8, 2**-8)
    assert (bf16.own_logits_relative, bf16.own_first_loss_relative) == (16 * 2**-8, 8 * 2**-8)
    assert fp16.logits_relative == 2 * 2**-11 and fp16.own_logits_relative == 16 * 2**-11
    with pytest.raises(ValueError, match="precision: unknown 'mixed'"):
        Tolerances.for_precision("mixed")


def mixed_probe(worker: str, logits_scale: float = 1.0, loss_shift: float = 0.0, own_logits: float = 5e-3,
                own_loss: float = 1e-3, precision: str = "bf16-mixed") -> Probe:
    """A probe as a mixed-precision worker returns it: its fp32 reference run is the fp32 function every
    worker shares; its own results are `own_*` away from that, plus the given differences."""
    fp32 = make_probe(worker)
    initial = fp32.initial_logits * logits_scale * (1 + own_logits)
    losses = tuple((x + loss_shift) * (1 + own_loss) for x in fp32.losses)
    return Probe(worker, *COUNTS, initial, losses, fp32.trained_logits, b"",
                 precision=precision, reference_logits=fp32.initial_logits, reference_losses=fp32.losses)


def test_the_precision_of_the_probes_selects_the_tolerances():
    # Two bf16 workers rounding 1% either side of the fp32 function they share are 2% apart: allowed
    # (3 x their own 1%)...
    summary = compare([mixed_probe("a", own_logits=1e-2), mixed_probe("b", own_logits=-1e-2)], COUNTS, [])
    assert summary["passed"] and summary["precision"] == "bf16-mixed"
    assert summary["pairs"][0]["logits_allowed"] == pytest.approx(3 * 1e-2, rel=2e-2)
    assert "bf16-mixed" in parity_lines(summary)[0]
    # ...fp32 workers 2% apart are not (1e-4), nor fp16 ones 1% from fp32 (beyond 16 x 2^-11 = 0.78%).
    assert not compare([make_probe("a"), make_probe("b", logits_scale=1.02)], COUNTS, [])["passed"]
    fp16 = [mixed_probe(name, own_logits=own, precision="fp16-mixed") for name, own in (("a", 1e-2), ("b", -1e-2))]
    assert not compare(fp16, COUNTS, [])["passed"]


def test_a_first_loss_far_from_its_own_fp32_run_fails_in_bf16():
    # 5% from its own fp32 first loss (a loss computed in bfloat16 from badly rounded logits, say):
    # beyond the ceiling of 8 u = 3.1%, though the pair's allowance would grow to 15%.
    summary = compare([mixed_probe("a"), mixed_probe("b", own_loss=5e-2)], COUNTS, [])
    assert summary["pairs"][0]["ok"] and not summary["passed"]
    assert [row["ok"] for row in summary["own_deviations"]] == [True, False]


def test_a_wrong_low_precision_path_fails_on_its_own_deviation():
    # A worker 17% from its own fp32 run (a layer in the wrong dtype, say) would widen the pair's
    # allowance to 50%: the ceiling (16 u = 6.25%) fails it whatever the other worker does.
    summary = compare([mixed_probe("a"), mixed_probe("b", own_logits=0.2)], COUNTS, [])
    assert summary["pairs"][0]["ok"] and not summary["passed"]
    assert [row["ok"] for row in summary["own_deviations"]] == [True, False]
    assert "| b | 1.67e-01" in "\n".join(parity_lines(summary))


def test_probes_of_different_precisions_are_not_compared():
    with pytest.raises(ValueError, match="precision: the probes ran bf16-mixed, fp32"):
        compare([make_probe("a"), mixed_probe("b")], COUNTS, [])


@pytest.mark.framework
def test_parity_command_passes_in_bf16_for_all_workers(tmp_path):
    small = ["--patients", "40", "--steps", "3", "--threads", "1", "--precision", "bf16-mixed"]
    workers = ["--workers", "pytorch,tensorflow,keras"]
    result = run_harness(["parity", *workers, *small, "--json", str(tmp_path / "p.json")], REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "p.json").read_text())
    assert summary["precision"] == "bf16-mixed" and summary["passed"]
    # Each worker ran its fp32 reference from the same weights, and deviates from it by bf16 rounding.
    assert {row["worker"] for row in summary["own_deviations"]} == {"pytorch", "tensorflow", "keras"}
    assert all(0 < row["logits_relative"] <= 16 * 2**-8 for row in summary["own_deviations"])
    assert all(len(losses) == 3 for losses in summary["reference_losses"].values())


def test_a_difference_both_precisions_share_fails_on_the_fp32_reference_runs():
    # 1% on every loss, in bf16 and in the fp32 reference run alike (a loss defined otherwise): within
    # the bf16 allowance (3 x 1% own deviation), but the reference runs are held to fp32's 1e-5.
    a = mixed_probe("a", own_loss=1e-2)
    shifted = mixed_probe("b", own_loss=1e-2)
    b = Probe("b", *COUNTS, shifted.initial_logits, tuple(x * 1.01 for x in shifted.losses), shifted.trained_logits,
              b"", precision="bf16-mixed", reference_logits=shifted.reference_logits,
              reference_losses=tuple(x * 1.01 for x in shifted.reference_losses))
    pair = compare([a, b], COUNTS, [])["pairs"][0]
    assert pair["first_loss_relative"] <= pair["first_loss_allowed"]
    assert pair["reference_first_loss_relative"] > 1e-5 and not pair["reference_ok"] and not pair["ok"]


def test_the_probe_takes_the_eval_batchs_feature_maps_and_their_cams_with_the_starting_head(null_worker, tmp_path):
    _, client = null_worker  # 32 px, 14 labels: one 32 x 32 cell, the image's mean in every channel
    start = starting_weights("random", "resnet50", 14, 0, tmp_path).data
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 32, 32), dtype=np.uint8)
    labels = (rng.random((40, 14)) < 0.3).astype(np.uint8)
    inputs = parity_inputs(pixels, labels, np.arange(40), seed=0, steps=1, batch_size=20)  # FeatureMaps: 16 + 4
    probed = probe(client, configure_request(BenchmarkConfig(workers="null", image_size=32).training(), 14), start,
                   inputs)
    assert probed.initial_features.shape == (20, 2048, 1, 1) and probed.initial_features.dtype == np.float32
    np.testing.assert_allclose(probed.initial_features[:, 5, 0, 0], inputs.eval_pixels.mean(axis=(1, 2)) / 255,
                               rtol=1e-6)
    head = weights_from_bytes(start)["fc.weight"]
    np.testing.assert_array_equal(probed.initial_cams, class_activation_maps(probed.initial_features, head))
    assert probed.initial_cams.shape == (20, 14, 1, 1) and probed.reference_features is None  # fp32: no reference


HEAD = np.linspace(-1, 1, 14 * 4).reshape(14, 4)


def feature_probe(worker: str, scale: float = 1.0, cams_scale: float = 1.0) -> Probe:
    """make_probe's probe with feature maps (2 images, 4 channels, 2 x 2) and their CAMs."""
    features = np.linspace(0, 8, 2 * 4 * 2 * 2).reshape(2, 4, 2, 2) * scale
    return replace(make_probe(worker), initial_features=features,
                   initial_cams=class_activation_maps(features, HEAD) * cams_scale)


def test_feature_maps_and_cams_within_1e_4_pass_and_beyond_fail_in_their_own_row():
    close = compare([feature_probe("a"), feature_probe("b", scale=1 + 5e-5)], COUNTS, [])
    (row,) = close["feature_maps"]
    assert close["passed"] and row["features_relative"] == pytest.approx(5e-5, rel=1e-2)
    assert row["cams_relative"] == pytest.approx(5e-5, rel=1e-2) and row["allowed"] == 1e-4
    apart = compare([feature_probe("a"), feature_probe("b", scale=1 + 2e-4)], COUNTS, [])
    assert apart["pairs"][0]["ok"] and not apart["feature_maps"][0]["ok"] and not apart["passed"]
    lines = "\n".join(parity_lines(apart))
    assert "Final feature maps" in lines and "| a vs b | 0.0016 | 2.00e-04 |" in lines and lines.endswith("| NO |")
    # Equal maps, CAMs 2e-4 apart (another head, say): the CAMs fail on their own.
    cams = compare([feature_probe("a"), feature_probe("b", cams_scale=1 + 2e-4)], COUNTS, [])
    assert cams["feature_maps"][0]["features_relative"] == 0.0 and not cams["passed"]


def test_probes_without_feature_maps_have_no_feature_row_and_no_table():
    summary = compare([make_probe("a"), feature_probe("b")], COUNTS, [])
    assert summary["feature_maps"] == [] and summary["passed"]
    assert "Final feature maps" not in "\n".join(parity_lines(summary))


def mixed_feature_probe(worker: str, own: float, reference_shift: float = 0.0) -> Probe:
    """A bf16 probe whose maps are `own` from its fp32 run's, which are `reference_shift` from the shared ones."""
    fp32 = feature_probe(worker).initial_features * (1 + reference_shift)
    features = fp32 * (1 + own)
    return replace(mixed_probe(worker), initial_features=features, initial_cams=class_activation_maps(features, HEAD),
                   reference_features=fp32)


def test_mixed_precision_feature_maps_are_held_to_their_own_ceiling_and_to_fp32_in_their_reference_runs():
    bf16 = Tolerances.for_precision("bf16-mixed")
    assert (bf16.features_relative, bf16.own_features_relative) == (2 * 2**-8, 16 * 2**-8)
    # 1% either side of the fp32 maps: 2% apart, within 3 x the own 1%.
    ok = compare([mixed_feature_probe("a", 1e-2), mixed_feature_probe("b", -1e-2)], COUNTS, [])
    assert ok["passed"] and ok["feature_maps"][0]["allowed"] == pytest.approx(3e-2, rel=1e-6)
    assert [row["features_relative"] for row in ok["own_deviations"]] == pytest.approx([1e-2 / 1.01, 1e-2], rel=1e-6)
    # 10% from its own fp32 maps: beyond 16 u = 6.25%, whatever the pair's allowance.
    wide = compare([mixed_feature_probe("a", 1e-2), mixed_feature_probe("b", 0.1)], COUNTS, [])
    assert [row["ok"] for row in wide["own_deviations"]] == [True, False] and not wide["passed"]
    # The fp32 reference runs' maps 1e-3 apart: fp32's 1e-4 fails them, though bf16's floor would not.
    shifted = compare([mixed_feature_probe("a", 0.0), mixed_feature_probe("b", 0.0, reference_shift=1e-3)], COUNTS, [])
    (row,) = shifted["feature_maps"]
    assert row["features_relative"] <= row["allowed"] and not row["reference_ok"] and not shifted["passed"]
    assert "fp32 runs' maps rel (<= 0.0001)" in "\n".join(parity_lines(shifted))
