"""What is particular to the TensorFlow and Keras workers (tests/conformance covers the contract):
XLA is an option, off by default, and what each worker reports is what it applied."""

from __future__ import annotations

import pytest

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


def configure(client, deterministic: bool = True, *options: str):
    config = BenchmarkConfig(workers=client.name, image_size=32, deterministic=deterministic, threads=2,
                             options=tuple(f"{client.name}.{option}" for option in options))
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
