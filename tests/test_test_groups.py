"""The test suite's own scheduling. tests/conftest.py marks the framework tests as one xdist group, meant
to run in one test process; with pytest 9.2 and pytest-xdist 3.8 (the latest) that does nothing: xdist
writes a test's group into `item._nodeid`, which pytest 9.2 no longer reads (it keeps `item._id`).
pytest 9.1.1 honours the groups, but then the framework tests run in one or two processes, and in
issue 19's measurement that took 57 min with two failures from oversubscription, against 56 min
passing as they run now. Kept as an expected failure: it turns into a failure the day groups work."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

# Markers added by a collection hook, as tests/conftest.py adds the groups.
CONFTEST = textwrap.dedent("""
    import pytest

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(config, items):
        for item in items:
            if item.get_closest_marker("heavy"):
                item.add_marker(pytest.mark.xdist_group("heavy"))
""")
TESTS = textwrap.dedent("""
    import os
    import pytest

    @pytest.mark.heavy
    @pytest.mark.parametrize("i", range(8))
    def test_grouped(i):
        print("RAN", os.environ["PYTEST_XDIST_WORKER"])
""")


@pytest.mark.xfail(strict=True, reason="pytest 9.2 with pytest-xdist 3.8: --dist loadgroup groups nothing")
def test_every_test_of_an_xdist_group_runs_in_one_test_process(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_groups.py").write_text(TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    heavy: grouped\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-n", "4", "--dist", "loadgroup", "-rP", "-p",
                           "no:cacheprovider", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    processes = set(re.findall(r"^RAN (gw\d+)$", done.stdout, re.MULTILINE))
    assert len(re.findall(r"^RAN ", done.stdout, re.MULTILINE)) == 8, done.stdout[-3000:]
    assert len(processes) == 1, processes
