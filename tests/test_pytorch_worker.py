"""What is particular to the PyTorch worker (tests/conformance checks what every worker must do):
versions and numerics read at run time, seeded initialisation, mixed precision on any device, and a
small benchmark end to end. Its environment is created on first use (about a minute, cached)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import REPO_ROOT, reference_parameter_counts, run_harness
from cxrbench.worker.v1.tensors import make_batch
from harness.runtime.client import WorkerError
from harness.config import BenchmarkConfig, cache_root
from harness.runtime.registry import discover_workers
from harness.runtime.environments import ensure_environment
from harness.runtime.local import LocalWorker
from harness.training.settings import configure_request

pytestmark = pytest.mark.framework

FACTS_PARAMETERS = reference_parameter_counts()
SIZE = 32


@pytest.fixture(scope="module")
def pytorch_worker(tmp_path_factory):
    folder = discover_workers()["pytorch"]
    worker = LocalWorker(folder, ensure_environment(folder, cache_root()), tmp_path_factory.mktemp("pytorch") / "pytorch.log")
    try:
        yield worker.start()
    finally:
        worker.stop()


def configure(client, architecture: str, seed: int = 0):
    config = BenchmarkConfig(workers="pytorch", architecture=architecture, image_size=SIZE, seed=seed, threads=2)
    return client.configure(configure_request(config.training(), num_labels=14))


def batch(index: int, n: int = 4, labels: bool = False):
    rng = np.random.default_rng(index)
    pixels = rng.integers(0, 256, (n, SIZE, SIZE), dtype=np.uint8)
    return make_batch(index, pixels, (rng.random((n, 14)) < 0.3).astype(np.uint8) if labels else None)


def test_metadata_reports_versions_read_at_run_time(pytorch_worker):
    meta = pytorch_worker.metadata()
    assert meta.worker == "pytorch" and meta.contract_version == "v1"
    assert meta.framework_versions["torch"].startswith("2.14.1")
    assert meta.framework_versions["torchvision"].startswith("0.29.1")
    assert meta.device.startswith(("cpu", "cuda")) and meta.threads >= 1


def test_same_seed_gives_the_same_initial_logits(pytorch_worker):
    configure(pytorch_worker, "resnet50", seed=7)
    first, _ = pytorch_worker.predict([batch(5)])
    configure(pytorch_worker, "resnet50", seed=7)
    second, _ = pytorch_worker.predict([batch(5)])
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize(("precision", "dtype", "scale"),
                         [("bf16-mixed", "bfloat16", "none"), ("fp16-mixed", "float16", "dynamic")])
def test_mixed_precision_autocasts_on_any_device_and_reports_what_ran(pytorch_worker, precision, dtype, scale):
    # torch autocasts to bfloat16 and float16 on CPUs too (GradScaler("cpu") for fp16), so nothing is refused.
    config = BenchmarkConfig(workers="pytorch", image_size=SIZE, precision=precision, threads=2)
    numerics = pytorch_worker.configure(configure_request(config.training(), 14)).numerics
    assert (numerics["precision"], numerics["compute_dtype"], numerics["autocast"]) == (precision, dtype, dtype)
    assert numerics["loss_scale"] == scale and numerics["variable_dtype"] == "float32"
    (step,) = pytorch_worker.train(iter([batch(1, labels=True)]))
    logits, _ = pytorch_worker.predict(iter([batch(5)]))
    assert np.isfinite(step.loss) and logits.dtype == np.float32 and np.isfinite(logits).all()


def test_autotuning_is_on_exactly_when_determinism_is_off(pytorch_worker):
    for deterministic in (True, False):
        config = BenchmarkConfig(workers="pytorch", image_size=SIZE, threads=2, deterministic=deterministic)
        numerics = pytorch_worker.configure(configure_request(config.training(), 14)).numerics
        assert numerics["deterministic"] == str(deterministic).lower()
        assert numerics["cudnn_benchmark"] == str(not deterministic).lower()


def test_small_benchmark_runs_end_to_end(tmp_path):
    out = tmp_path / "results"
    # The null worker second: the benchmark probes it after PyTorch and loads PyTorch's weights into it.
    result = run_harness(["benchmark", "--workers", "pytorch,null", "--epochs", "1", "--patients", "40",
                          "--image-size", "32", "--batch-size", "8", "--threads", "1", "--out", str(out)], REPO_ROOT)
    assert result.returncode == 0, result.stderr
    (run,) = out.iterdir()
    metrics = json.loads((run / "metrics.json").read_text())["workers"]["pytorch"]
    assert (metrics["parameters"]["trainable"], metrics["parameters"]["non_trainable"]) == FACTS_PARAMETERS["resnet50"]
    assert 0.0 <= metrics["test"]["macro_auroc"] <= 1.0
    # fp32 safetensors of every parameter and running statistic: 4 bytes each plus a small header.
    assert 4 * sum(FACTS_PARAMETERS["resnet50"]) < metrics["model_size_bytes"]["neutral_safetensors"] < 4 * sum(FACTS_PARAMETERS["resnet50"]) + 100_000
    record = json.loads((run / "run.json").read_text())
    reported = record["workers"]["pytorch"]["reported"]
    assert reported["framework_versions"]["torch"].startswith("2.14.1")
    # Read back after Configure: what the worker actually ran with (DESIGN invariant 7).
    assert reported["threads"] == 1
    # Timed runs use the default, non-deterministic algorithms unless --deterministic (parity probes always are).
    assert reported["numerics"]["deterministic_algorithms"] == "false"
    assert reported["numerics"]["allow_tf32_matmul"] == "false"
    # The run started from the harness's weights and carries its parity probe (one worker: counts only).
    assert record["starting_weights"]["scheme"] == "torchvision-init" and record["starting_weights"]["tensors"] == 267
    parity = json.loads((run / "parity.json").read_text())
    assert parity["counts"][0] == {"worker": "pytorch", "trainable": 23_536_718, "non_trainable": 53_120, "ok": True}
    assert len(parity["losses"]["pytorch"]) == len(parity["nudged_losses"]["pytorch"]) == 20
    assert [(row["exporter"], row["importer"]) for row in parity["cross_loads"]] == [("pytorch", "null")]
    assert not parity["passed"]  # the null worker computes nothing, so it cannot agree
    assert "## Parity: the same network in every framework" in (run / "report.md").read_text()
