"""What is particular to the JAX worker (tests/conformance covers the contract): what it reports is
what it applied, fp16 loss scaling runs, training is deterministic on a CPU (programs loaded from the
compilation cache included), and the layers it writes out compute what PyTorch's do."""

from __future__ import annotations

import subprocess
import textwrap

import numpy as np
import pytest

from conftest import REPO_ROOT
from cxrbench.worker.v1.tensors import make_batch
from harness.config import BenchmarkConfig, cache_root
from harness.runtime.environments import ensure_environment
from harness.runtime.local import LocalWorker
from harness.runtime.registry import discover_workers
from harness.training.settings import configure_request

pytestmark = pytest.mark.framework
SIZE = 32


@pytest.fixture(scope="module")
def environment():
    return ensure_environment(discover_workers()["jax"], cache_root())


@pytest.fixture(scope="module")
def worker(environment, tmp_path_factory):
    process = LocalWorker(discover_workers()["jax"], environment, tmp_path_factory.mktemp("jax") / "worker.log")
    try:
        client = process.start()
        client.stall_timeout = 600.0  # a first step compiles: minutes on 2 cores shared with other tests
        yield client
    finally:
        process.stop()


def configure(client, precision: str = "fp32", deterministic: bool = False):
    config = BenchmarkConfig(workers="jax", image_size=SIZE, threads=2, precision=precision, deterministic=deterministic)
    return client.configure(configure_request(config.training("jax"), 14))


def losses(client, steps: int = 2) -> list[float]:
    rng = np.random.default_rng(0)
    batches = [make_batch(i, (rng.random((4, SIZE, SIZE)) * 255).astype(np.uint8),
                          (rng.random((4, 14)) < 0.3).astype(np.uint8)) for i in range(steps)]
    return [step.loss for step in client.train(iter(batches))]


def test_metadata_reports_jax_flax_and_optax_full_float32_matmuls_and_the_determinism_xla_read(worker):
    reply = configure(worker)  # the first Configure: XLA's backend starts with its determinism
    meta = worker.metadata()
    assert {"jax", "jaxlib", "flax", "optax", "numpy", "python"} <= set(meta.framework_versions)
    assert meta.device.startswith("cpu (") and meta.threads == 2
    assert reply.numerics["matmul_precision"] == "float32" and reply.numerics["allow_tf32"] == "false"
    # XLA's CPU code is deterministic whatever the GPU flag says.
    assert reply.numerics["deterministic"] == "true" and reply.numerics["xla_gpu_deterministic_ops"] == "false"
    assert "deterministic_note" not in reply.numerics
    # XLA read its flags when it started; on a CPU a later request for determinism is met all the same
    # (on a GPU it would be reported as not applied: cxrbench_worker.jax_settings.set_deterministic).
    reply = configure(worker, deterministic=True)
    assert reply.numerics["xla_gpu_deterministic_ops"] == "false" and reply.numerics["deterministic"] == "true"
    assert "deterministic_note" not in reply.numerics


def test_training_from_the_same_seed_and_batches_is_bit_identical(worker):
    configure(worker)
    first = losses(worker, 3)
    configure(worker)  # the same seed draws the same starting weights; the compiled steps are reused
    assert losses(worker, 3) == first and all(np.isfinite(first))


def test_fp16_mixed_trains_with_dynamic_loss_scaling_and_reports_it(worker):
    reply = configure(worker, "fp16-mixed")
    assert reply.numerics["compute_dtype"] == "float16" and reply.numerics["loss_scale"] == "dynamic"
    assert reply.numerics["loss_scale_initial"] == "65536"
    assert all(np.isfinite(losses(worker)))


def test_a_worker_loading_its_steps_from_the_compilation_cache_trains_bit_identically(environment, tmp_path):
    # Each run has a worker process of its own: the second one here finds the first one's programs on disk.
    cache = tmp_path / "compiled"
    trained = []
    for name in ("compiles", "loads"):
        process = LocalWorker(discover_workers()["jax"], environment, tmp_path / f"{name}.log",
                              extra_env={"JAX_COMPILATION_CACHE_DIR": str(cache)})
        try:
            client = process.start()
            client.stall_timeout = 600.0
            configure(client)
            trained.append(losses(client, 3))
        finally:
            process.stop()
        if name == "compiles":
            written = sorted(path.name for path in cache.iterdir())
            assert any(entry.startswith("jit_train") for entry in written), written
    assert trained[1] == trained[0] and all(np.isfinite(trained[0]))
    assert sorted(path.name for path in cache.iterdir()) == written  # nothing compiled anew


def test_a_cached_environment_keeps_its_compiled_programs_in_its_own_folder(environment, worker):
    configure(worker)
    losses(worker, 1)
    folder = environment.python.parent.parent / "jax-compilation-cache"  # <environment>/bin/python
    assert any(path.name.startswith("jit_train") for path in folder.iterdir())


LAYERS_SCRIPT = textwrap.dedent("""
    import sys
    sys.path[:0] = [sys.argv[1] + "/workers/common", sys.argv[1] + "/workers/jax"]
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_default_matmul_precision", "float32")
    from cxrbench_jax.layers import Conv, TorchBatchNorm

    # A 3x3 convolution on 2 x 2 maps (output smaller than the kernel: computed by im2col on a CPU)
    # and a stride-2 one on 3 x 3 maps, against XLA's own convolution.
    for size, stride in ((2, 1), (3, 2)):
        x = jax.random.normal(jax.random.key(0), (4, size, size, 64))
        conv = Conv(32, 3, stride, 1)
        variables = conv.init(jax.random.key(1), x)
        ours = conv.apply(variables, x)
        theirs = jax.lax.conv_general_dilated(x, variables["params"]["kernel"], (stride, stride), ((1, 1), (1, 1)),
                                              dimension_numbers=("NHWC", "HWIO", "NHWC"))
        assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
        assert float(jnp.abs(ours - theirs).max() / jnp.abs(theirs).max()) < 1e-5

    # BatchNorm: the running variance moves towards the unbiased batch variance, as torch's does.
    x = jax.random.normal(jax.random.key(2), (2, 3, 3, 5)) * 3 + 100
    norm = TorchBatchNorm()
    variables = norm.init(jax.random.key(3), x, train=False)
    y, updates = norm.apply(variables, x, train=True, mutable=["batch_stats"])
    flat = np.asarray(x, np.float64).reshape(-1, 5)
    np.testing.assert_allclose(updates["batch_stats"]["running_var"], 0.9 + 0.1 * flat.var(axis=0, ddof=1), rtol=1e-5)
    np.testing.assert_allclose(updates["batch_stats"]["running_mean"], 0.1 * flat.mean(axis=0), rtol=1e-5)
    expected = (flat - flat.mean(axis=0)) / np.sqrt(flat.var(axis=0) + 1e-5)
    np.testing.assert_allclose(np.asarray(y).reshape(-1, 5), expected, atol=1e-4)
    print("ok")
""")


def test_the_written_out_layers_compute_what_torch_and_xla_compute(environment):
    done = subprocess.run([str(environment.python), "-c", LAYERS_SCRIPT, str(REPO_ROOT)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
