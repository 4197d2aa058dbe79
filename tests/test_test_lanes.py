"""The test suite's own scheduling: the framework tests' lanes (tests/conftest.py) hold, i.e. pytest-xdist
really sends every test of an xdist group to one test process. With pytest 9.2 and pytest-xdist 3.8 it
silently did not: every framework test went to whichever process was free, each process started its own
copy of a file's framework worker, and the suite ran four framework workers at once on 2 cores."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import SECOND_LANE_CONFORMANCE, framework_lane

# Markers added by a collection hook, as tests/conftest.py adds the lanes' groups.
CONFTEST = textwrap.dedent("""
    import pytest

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(config, items):
        for item in items:
            if item.get_closest_marker("heavy"):
                item.add_marker(pytest.mark.xdist_group("lane-" + str(item.callspec.params["i"] % 2)))
""")
TESTS = textwrap.dedent("""
    import os
    import pytest

    @pytest.mark.heavy
    @pytest.mark.parametrize("i", range(8))
    def test_grouped(i):
        print("RAN", "lane-" + str(i % 2), os.environ["PYTEST_XDIST_WORKER"])

    @pytest.mark.parametrize("i", range(8))
    def test_free(i):
        pass
""")


def test_every_test_of_an_xdist_group_runs_in_one_test_process(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_groups.py").write_text(TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    heavy: grouped\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-n", "4", "--dist", "loadgroup", "-rP", "-p",
                           "no:cacheprovider", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    ran = re.findall(r"^RAN (lane-\d) (gw\d+)$", done.stdout, re.MULTILINE)
    assert len(ran) == 8, done.stdout[-3000:]
    processes = {lane: {worker for name, worker in ran if name == lane} for lane in ("lane-0", "lane-1")}
    assert all(len(workers) == 1 for workers in processes.values()), processes


class _Item:
    """What framework_lane reads of a collected test."""

    def __init__(self, file: str, worker: str | None = None) -> None:
        self.path = Path("tests") / file
        if worker is not None:
            self.callspec = type("CallSpec", (), {"params": {"worker_process": worker, "arch": "resnet50"}})()


def test_a_workers_conformance_tests_share_a_lane_and_the_lanes_split_the_workers():
    lanes = {worker: framework_lane(_Item("test_worker_conformance.py", worker))
             for worker in ("jax", "keras", "keras[jax]", "keras[torch]", "pytorch", "tensorflow")}
    assert {worker for worker, lane in lanes.items() if lane == "framework-2"} == SECOND_LANE_CONFORMANCE
    assert set(lanes.values()) == {"framework-1", "framework-2"}
    assert framework_lane(_Item("test_worker_conformance.py")) == "framework-1"  # not parametrized by worker
    assert framework_lane(_Item("test_jax_worker.py")) == "framework-2"
    assert framework_lane(_Item("test_tensorflow_worker.py")) == "framework-1"
