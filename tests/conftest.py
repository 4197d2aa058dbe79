"""Shared fixtures: a running null worker, and the harness CLI as a subprocess."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cxrbench_worker.worker_labels import worker_label
from harness.config import BenchmarkConfig, cache_root
from harness.runtime.registry import discover_workers, resolve_workers
from harness.runtime.environments import ensure_environment
from harness.runtime.local import LocalRuntime, LocalWorker
from harness.training.settings import configure_request
from scheduling import (  # noqa: F401  how pytest-xdist shares the tests among its processes
    pytest_collection_modifyitems,
    pytest_configure_node,
    pytest_sessionfinish,
    pytest_unconfigure,
    pytest_xdist_make_scheduler,
)

# The suite runs four processes on as few as 2 cores. An OpenMP thread that finishes first spins while
# waiting for the others (libgomp's default), and spinning on an oversubscribed machine starves the very
# threads it waits for: a small PyTorch benchmark beside four busy processes took 109-163 s, and 68-72 s
# with passive waiting (the same losses). Every harness and worker the tests start inherits this.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE = REPO_ROOT / "reference"  # published figures the tests check against (reference/README.md)
# Small and fast: enough patients for every split, images big enough for ResNet-50's strides.
# One training run unless a test asks for more (--seeds after SMALL_RUN wins): the default is 3.
SMALL_RUN = ["--patients", "40", "--image-size", "32", "--batch-size", "8", "--seeds", "0"]


@pytest.fixture(autouse=True)
def _framework_environments_first(request) -> None:
    """A framework test waits until every framework environment exists (see framework_environments)."""
    if request.node.get_closest_marker("framework"):
        request.getfixturevalue("framework_environments")


@pytest.fixture(scope="session")
def framework_environments() -> None:
    """Every listed worker's environment and each variant's, made before the first framework test
    and two at a time (LocalRuntime.prepare), not one by one as each test file first asks: on a
    fresh machine the framework tests would otherwise spend minutes installing in turn. Each test
    process that runs a framework test runs it (tests/scheduling.py); the environments' file locks make
    each one once. A test file still asks for its own environment (ensure_environment), then finds it made."""
    labels = [worker_label(name, variant) for name, folder in discover_workers().items() if folder.listed
              for variant in (None, *folder.variant_names)]
    LocalRuntime(cache_root()).prepare(resolve_workers(",".join(labels)))


@pytest.fixture(scope="session")
def cpu_null_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """`benchmark --workers null` for two epochs on the CPU, the null worker run by this very interpreter
    (`--python`): the completed process and the run directory.

    Made once per test session and shared by the tests that only read it, whichever xdist process
    they land in (a file lock in the session's temporary folder): each benchmark run costs seconds
    (preflight, ceiling, training, report), and the fast tier has a budget.
    """
    def run(shared: Path) -> dict:
        result = run_harness(["benchmark", "--workers", "null", "--epochs", "2", *SMALL_RUN, "--python",
                              f"null={sys.executable}", "--out", str(shared / "results")], cwd=shared)
        assert result.returncode == 0, result.stderr
        return {"stdout": result.stdout, "stderr": result.stderr}

    shared, output = made_once(tmp_path_factory.getbasetemp(), "cpu_null_run", run)
    completed = subprocess.CompletedProcess([], 0, output["stdout"], output["stderr"])
    return completed, next((shared / "results").iterdir())


def made_once(base: Path, name: str, make: Callable[[Path], dict]) -> tuple[Path, dict]:
    """`make(folder)` once per test session, whichever xdist process asks first (a file lock in the
    session's temporary folder); every caller gets (folder, what it returned, as JSON)."""
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    shared.mkdir(exist_ok=True)
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        saved = shared / "made.json"
        if not saved.exists():
            saved.write_text(json.dumps(make(shared)))
    return shared, json.loads(saved.read_text())


@pytest.fixture
def null_worker(tmp_path):
    """A null worker process, configured for 32x32 images and 14 labels; stopped afterwards."""
    folder = discover_workers()["null"]
    worker = LocalWorker(folder, ensure_environment(folder, cache_root()), tmp_path / "null.log")
    try:
        client = worker.start()
        client.configure(configure_request(BenchmarkConfig(workers="null", image_size=32).training(), num_labels=14))
        yield worker, client
    finally:
        worker.stop()


def run_harness(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `harness ARGS` as a user would, in a subprocess; returns the completed process."""
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], cwd=cwd, env={**os.environ, **(env or {})},
        capture_output=True, text=True, timeout=timeout,
    )


# The harness with Python's KeyboardInterrupt handler on SIGINT, installed in the child itself: a test
# runner started in the background (`cmd &` in a script, nohup) inherits SIGINT ignored, and so would
# the harness: Python then installs no such handler and a test's Ctrl-C does nothing. Not a preexec_fn:
# with one, Popen forks instead of vforking, gRPC's fork handlers run in the child, and with a channel
# open in this test process (a null worker's) the child can abort before exec ("epoll_wait error: Bad
# file descriptor", grpc/grpc#43055).
_HARNESS_INTERRUPTIBLE = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                          "runpy.run_module('harness.cli', run_name='__main__', alter_sys=True)")


def harness_process(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `harness ARGS` in the background (for tests that interrupt it), Ctrl-C-able as from a terminal."""
    return subprocess.Popen(
        [sys.executable, "-c", _HARNESS_INTERRUPTIBLE, *args], cwd=cwd, env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def reference_parameter_counts() -> dict[str, tuple[int, int]]:
    """torchvision's (trainable, non-trainable) counts per architecture with a 14-logit head."""
    counts = json.loads((REFERENCE / "parameter_counts.json").read_text())["torchvision"]
    return {arch: (entry["trainable"], entry["non_trainable"]) for arch, entry in counts.items()}
