"""What is particular to the TensorFlow and Keras workers (tests/conformance covers the contract):
XLA is an option, off by default, mixed precision runs on a CPU, and what each worker reports is what
it applied."""

from __future__ import annotations

import numpy as np
import pytest

from cxrbench.worker.v1.tensors import make_batch
from harness.runtime.client import WorkerError
from harness.config import BenchmarkConfig, cache_root
from harness.runtime.registry import discover_workers
from harness.runtime.environments import ensure_environment
from harness.runtime.local import LocalWorker
from harness.training.settings import configure_request

pytestmark = pytest.mark.framework


@pytest.fixture(scope="module", params=["tensorflow", "keras"])
def worker(request, tmp_path_factory):
    folder = discover_workers()[request.param]
    process = LocalWorker(folder, ensure_environment(folder, cache_root()), tmp_path_factory.mktemp(request.param) / "worker.log")
    try:
        yield process.start()
    finally:
        process.stop()


def configure(client, deterministic: bool = True, *options: str, precision: str = "fp32"):
    config = BenchmarkConfig(workers=client.name, image_size=32, deterministic=deterministic, threads=2,
                             options=tuple(f"{client.name}.{option}" for option in options), precision=precision)
    return client.configure(configure_request(config.training(client.name), 14))


def test_xla_is_off_by_default_and_reported(worker):
    reply = configure(worker)
    assert reply.numerics["jit_compile"] == "false"


def test_xla_can_be_asked_for(worker):
    if worker.name == "keras":
        # Keras silently drops XLA under TensorFlow's op determinism, so the worker refuses the pair...
        with pytest.raises(WorkerError) as refused:
            configure(worker, True, "jit_compile=true")
        assert refused.value.code == "UNIMPLEMENTED" and "options.jit_compile" in refused.value.details
        reply = configure(worker, False, "jit_compile=true")  # ...and applies it without determinism.
    else:
        reply = configure(worker, True, "jit_compile=true")
    assert reply.numerics["jit_compile"] == "true"


def test_a_bad_option_value_names_the_option(worker):
    with pytest.raises(WorkerError) as error:
        configure(worker, True, "jit_compile=maybe")
    assert error.value.code == "INVALID_ARGUMENT" and "options.jit_compile" in error.value.details


@pytest.mark.parametrize(("precision", "dtype", "scale"),
                         [("bf16-mixed", "bfloat16", "none"), ("fp16-mixed", "float16", "dynamic")])
def test_mixed_precision_trains_on_a_cpu_and_reports_what_ran(worker, precision, dtype, scale):
    reply = configure(worker, precision=precision)
    numerics = reply.numerics
    assert (numerics["precision"], numerics["compute_dtype"], numerics["variable_dtype"]) == (precision, dtype, "float32")
    assert numerics["loss_scale"] == scale and numerics["deterministic"] == "true"
    if worker.name == "keras":
        assert numerics["dtype_policy"] == {"bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}[dtype]
    if worker.metadata().device.startswith("cpu"):
        assert numerics["gpu_memory_growth"] == "n/a (no GPU)"
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (4, 32, 32), dtype=np.uint8)
    (step,) = worker.train(iter([make_batch(0, pixels, (rng.random((4, 14)) < 0.3).astype(np.uint8))]))
    logits, _ = worker.predict(iter([make_batch(1, pixels)]))
    # The loss is float32 BCE of float32 logits; the logits come back float32 (the head's output cast).
    assert np.isfinite(step.loss) and 0 < step.loss < 10
    assert logits.dtype == np.float32 and logits.shape == (4, 14) and np.isfinite(logits).all()


def test_determinism_off_is_reported(worker):
    assert configure(worker, False).numerics["deterministic"] == "false"
