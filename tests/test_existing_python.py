"""`--python NAME=PATH`: a worker run by an interpreter the user already has, nothing built."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from harness.config import BenchmarkConfig, cache_root
from harness.runtime.environments import ensure_environment
from harness.runtime.existing_python import direct_packages, inspect_interpreter
from harness.runtime.registry import discover_workers
from tests.conftest import SMALL_RUN, run_harness

WORKERS = discover_workers()


def test_a_workers_own_pins_are_its_requirements_first_block():
    assert direct_packages(WORKERS["pytorch"]) == ["torch", "torchvision", "numpy", "grpcio",
                                                   "grpcio-health-checking", "protobuf", "safetensors"]
    # Keras's file lists Keras's and TensorFlow's dependencies after comments: pip brings those.
    assert direct_packages(WORKERS["keras"])[:2] == ["keras", "tensorflow-cpu"]
    assert "absl-py" not in direct_packages(WORKERS["keras"])
    assert direct_packages(WORKERS["null"]) == []


def test_an_interpreter_with_the_contracts_packages_runs_the_null_worker():
    found = inspect_interpreter("null", WORKERS["null"], Path(sys.executable))
    assert set(found.packages) == {"grpcio", "grpcio-health-checking", "protobuf", "numpy", "safetensors"}
    assert len(found.installed_sha256) == 64


def test_an_interpreter_without_the_framework_is_refused_with_everything_it_lacks():
    with pytest.raises(ValueError) as refused:
        inspect_interpreter("pytorch", WORKERS["pytorch"], Path(sys.executable))
    message = str(refused.value)
    assert message.startswith(f"--python pytorch={sys.executable}: this interpreter (Python ")
    assert "lacks torch, torchvision, which worker 'pytorch' needs" in message
    assert "-m pip install torch torchvision" in message


def test_a_path_that_is_no_interpreter_is_refused_by_the_option():
    with pytest.raises(ValueError, match="--python: 'pytorch=/no/such/python': /no/such/python is not an executable"):
        BenchmarkConfig(pythons=("pytorch=/no/such/python",))
    with pytest.raises(ValueError, match="must look like NAME=PATH"):
        BenchmarkConfig(pythons=("/usr/bin/python3",))
    with pytest.raises(ValueError, match="--python: worker 'keras' is not in this run"):
        BenchmarkConfig(workers="pytorch", pythons=(f"keras={sys.executable}",)).selected_workers()
    with pytest.raises(ValueError, match="--python: existing interpreters are for --runtime local"):
        BenchmarkConfig(runtime="remote", remote_workers=("pytorch=host:1",), pythons=(f"pytorch={sys.executable}",))


def test_the_run_records_the_existing_interpreter_and_the_report_names_it(cpu_null_run):
    _, run_dir = cpu_null_run  # run with --python null=<this interpreter>
    environment = json.loads((run_dir / "run.json").read_text())["workers"]["null"]["environment"]
    assert environment["existing"] is True and environment["python"] == sys.executable
    assert environment["packages"]["grpcio"].startswith("grpcio ")
    assert f"existing interpreter `{sys.executable}`" in (run_dir / "report.md").read_text()


@pytest.mark.framework
def test_a_benchmark_with_an_existing_torch_interpreter_builds_no_environment(tmp_path):
    # The cached PyTorch environment stands in for a user's conda env: an interpreter with torch.
    python = ensure_environment(WORKERS["pytorch"], cache_root()).python
    empty_cache = tmp_path / "cache"
    result = run_harness(["benchmark", "--workers", "pytorch", *SMALL_RUN, "--epochs", "1", "--python",
                          f"pytorch={python}", "--out", str(tmp_path / "results")], cwd=tmp_path,
                         env={"CXRBENCH_CACHE": str(empty_cache)})
    assert result.returncode == 0, result.stderr
    assert "Creating the environment" not in result.stderr
    assert not (empty_cache / "envs").exists()  # nothing was built
    run_dir = next((tmp_path / "results").iterdir())
    worker = json.loads((run_dir / "run.json").read_text())["workers"]["pytorch"]
    assert worker["environment"]["python"] == str(python)
    assert worker["reported"]["framework_versions"]["torch"].startswith("2.14.1")
    report = (run_dir / "report.md").read_text()
    assert f"existing interpreter `{python}`" in report
    assert "torch 2.14.1" in report
