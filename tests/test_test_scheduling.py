"""The test suite's own scheduling (tests/scheduling.py), on a small made-up suite run in four processes:
the tests of a file that share a module-scoped fixture of their own in one process (framework or not),
the conformance-like file's tests in one process per value of its session-scoped parameter, every
cluster test in one process, framework tests that share nothing each a unit of their own, never more
than two heavy units running at once, the longest first as the committed durations say, the fast
tests spread over the processes, and each heavy unit's duration kept; and, on a simulated clock, that
short heavy units run in two lanes and no fast test waits behind a heavy one."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

TESTS = Path(__file__).resolve().parent

CONFTEST = textwrap.dedent(f"""
    import fcntl, os, sys, time
    from pathlib import Path
    import pytest
    sys.path.insert(0, {str(TESTS)!r})
    import scheduling
    from scheduling import (pytest_collection_modifyitems, pytest_configure_node, pytest_sessionfinish,
                            pytest_unconfigure, pytest_xdist_make_scheduler)

    # This made-up suite's committed durations: none (not the real suite's tests/heavy_units.json).
    scheduling.COMMITTED_DURATIONS = Path(os.environ["EVENTS"]).with_name("heavy_units.json")

    def log(line):
        with open(os.environ["EVENTS"], "a") as events:
            fcntl.flock(events, fcntl.LOCK_EX)
            events.write(line + "\\n")

    @pytest.fixture(autouse=True)
    def events(request):
        heavy = any(request.node.get_closest_marker(m) for m in ("framework", "cluster"))
        params = getattr(getattr(request.node, "callspec", None), "params", {{}})
        unit = request.node.path.stem + (f"[{{params['shared']}}]" if "shared" in params else "")
        if unit.endswith("_alone"):  # a unit per test
            unit += f"::{{request.node.name}}"
        worker = os.environ["PYTEST_XDIST_WORKER"]
        log(f"begin {{'heavy' if heavy else 'light'}} {{unit}} {{worker}}")
        time.sleep(0.05 if heavy else 0.01)  # room for another process to start something meanwhile
        yield
        log(f"end {{'heavy' if heavy else 'light'}} {{unit}} {{worker}}")

""")
FRAMEWORK_FILE = textwrap.dedent("""
    import os
    import pytest
    from conftest import log
    pytestmark = pytest.mark.framework

    @pytest.fixture(scope="module")
    def worker():
        log(f"setup module {{__name__}} {{os.environ['PYTEST_XDIST_WORKER']}}")

    @pytest.mark.parametrize("i", range({n}))
    def test_step(worker, i):
        pass
""")
ALONE_FILE = textwrap.dedent("""
    import pytest
    pytestmark = pytest.mark.framework

    @pytest.mark.parametrize("i", range(4))
    def test_alone(i):
        pass
""")
LIGHT_SHARED_FILE = textwrap.dedent("""
    import os
    import pytest
    from conftest import log

    @pytest.fixture(scope="module")
    def browser():
        log(f"setup module {__name__} {os.environ['PYTEST_XDIST_WORKER']}")

    @pytest.mark.parametrize("i", range(6))
    def test_page(browser, i):
        pass
""")
SHARED_FILE = textwrap.dedent("""
    import os
    import pytest
    from conftest import log
    pytestmark = pytest.mark.framework

    @pytest.fixture(scope="session", params=["a", "b", "c"])
    def shared(request):
        log(f"setup shared {request.param} {os.environ['PYTEST_XDIST_WORKER']}")
        return request.param

    @pytest.mark.parametrize("arch", ["x", "y"])
    @pytest.mark.parametrize("i", range(3))
    def test_with_the_shared_worker(shared, arch, i):
        pass
""")
CLUSTER_FILE = textwrap.dedent("""
    import pytest

    @pytest.mark.cluster
    @pytest.mark.parametrize("i", range(3))
    def test_on_the_cluster(i):
        pass

    def test_fast_beside_it():
        pass
""")
LIGHT_FILE = textwrap.dedent("""
    import pytest

    @pytest.mark.parametrize("i", range(40))
    def test_fast(i):
        pass
""")


def run_suite(folder: Path) -> list[tuple[str, str, str, str]]:
    (folder / "conftest.py").write_text(CONFTEST)
    for name, n in [("fw_a", 8), ("fw_b", 6), ("fw_c", 5), ("fw_d", 4), ("fw_e", 3)]:
        (folder / f"test_{name}.py").write_text(FRAMEWORK_FILE.format(n=n))
    (folder / "test_conformance_like.py").write_text(SHARED_FILE)
    (folder / "test_cluster_one.py").write_text(CLUSTER_FILE)
    (folder / "test_cluster_two.py").write_text(CLUSTER_FILE)
    (folder / "test_light.py").write_text(LIGHT_FILE)
    (folder / "test_fw_alone.py").write_text(ALONE_FILE)
    (folder / "test_light_shared.py").write_text(LIGHT_SHARED_FILE)
    (folder / "pytest.ini").write_text("[pytest]\nmarkers =\n    framework: heavy\n    cluster: heavy\n")
    # Committed durations (no cache yet): fw_e the longest, fw_d the shortest; a unit not listed counts
    # as their median.
    (folder / "heavy_units.json").write_text(json.dumps({"test_fw_e.py": 1000, "test_fw_d.py": 1}))
    events = folder / "events.log"
    environment = {**os.environ, "EVENTS": str(events), "CXRBENCH_HEAVY_TESTS_AT_ONCE": "2"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-n", "4", "-q", str(folder)],
                          cwd=folder, capture_output=True, text=True, timeout=300, env=environment)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"\b102 passed\b", done.stdout), done.stdout[-2000:]
    return [tuple(line.split()) for line in events.read_text().splitlines()]


def test_heavy_units_stay_in_one_process_and_at_most_two_run_at_once(tmp_path):
    events = run_suite(tmp_path)

    processes = defaultdict(set)
    for event, kind, unit, worker in events:
        if event == "begin":
            processes[(kind, unit)].add(worker)
    for (kind, unit), workers in processes.items():
        if kind == "heavy" and not unit.startswith("test_cluster"):
            assert len(workers) == 1, f"{unit} ran in {sorted(workers)}"
    cluster = processes[("heavy", "test_cluster_one")] | processes[("heavy", "test_cluster_two")]
    assert len(cluster) == 1, f"the cluster tests ran in {sorted(cluster)}"
    assert len(processes[("light", "test_light")]) >= 2, "the fast tests ran in one process"
    assert len(processes[("light", "test_light_shared")]) == 1, "a module fixture's tests were spread"
    # Each file's module-scoped fixture made once (it would be made in every process its tests ran in).
    module_setups = sorted(value for event, kind, value, _ in events if event == "setup" and kind == "module")
    assert module_setups == [*(f"test_fw_{name}" for name in "abcde"), "test_light_shared"], module_setups

    # Each value of the session-scoped parameter: its fixture made once, in the process that ran its tests.
    setups = [(value, worker) for event, kind, value, worker in events if event == "setup" and kind == "shared"]
    assert sorted(value for value, _ in setups) == ["a", "b", "c"], setups
    for value, worker in setups:
        assert processes[("heavy", f"test_conformance_like[{value}]")] == {worker}

    # The longest heavy unit (as committed) starts among the first two, the shortest last.
    starts = list(dict.fromkeys(unit for event, kind, unit, _ in events if event == "begin" and kind == "heavy"))
    assert "test_fw_e" in starts[:2] and starts[-1] == "test_fw_d", starts

    # Heavy units running at once, counted from the begin and end of each test in the order they happened.
    running: dict[str, int] = defaultdict(int)
    most = 0
    for event, kind, unit, _ in events:
        if kind != "heavy" or event == "setup":
            continue
        running[unit.replace("test_cluster_two", "test_cluster_one")] += 1 if event == "begin" else -1
        most = max(most, sum(1 for count in running.values() if count > 0))
    assert most <= 2, f"{most} heavy units ran at once"

    # What each heavy unit took is kept for the next run's order, and only theirs.
    kept = json.loads((tmp_path / ".pytest_cache" / "v" / "cxrbench" / "heavy-unit-seconds").read_text())
    assert sorted(kept) == sorted(["group:cluster", *(f"test_conformance_like.py[shared='{v}']" for v in "abc"),
                                   *(f"test_fw_{name}.py" for name in "abcde"),
                                   *(f"test_fw_alone.py::test_alone[{i}]" for i in range(4))]), kept


def test_every_test_of_the_suite_has_a_time_limit_inside_ci(pytestconfig):
    # A hang once used up CI's 90 minutes and printed nothing about where it was: pytest-timeout fails
    # such a test with its stack, early enough for the rest of the suite to run.
    assert pytestconfig.pluginmanager.hasplugin("timeout")
    assert 0 < float(pytestconfig.getini("timeout")) <= 30 * 60


class _SimulatedProcess:
    """An xdist worker process as the scheduler sees it: it runs its tests in the order given, each once
    it holds the next one or has been told to stop (as xdist's workers do)."""

    def __init__(self, name: str) -> None:
        self.name, self.queue, self.shutting_down = name, [], False
        self.gateway = SimpleNamespace(id=name)
        self.running: tuple[int, float] | None = None  # (test index, when it ends)

    def send_runtest_some(self, indices: list[int]) -> None:
        self.queue.extend(indices)

    def shutdown(self) -> None:
        self.shutting_down = True


def simulate(units: dict[str, tuple[str | None, bool]], seconds: dict[str, float], tmp_path: Path,
             processes: int = 4) -> dict[str, tuple[str, float, float]]:
    """Run a made-up collection through HeavyUnitScheduling on a simulated clock: test id -> (process,
    began, ended)."""
    from scheduling import HeavyUnitScheduling

    units_file = tmp_path / "units.json"
    units_file.write_text(json.dumps(units))
    config = SimpleNamespace(getvalue=lambda name: [f"{processes}*popen"] if name == "tx" else None)
    scheduler = HeavyUnitScheduling(config, None, units_file, {}, heavy_at_once=2)
    collection = list(units)
    nodes = [_SimulatedProcess(f"gw{i}") for i in range(processes)]
    for node in nodes:
        scheduler.add_node(node)
    for node in nodes:
        scheduler.add_node_collection(node, collection)
    scheduler.schedule()
    now, ran = 0.0, {}
    while True:
        for node in nodes:  # start what may start
            if node.running is None and node.queue and (len(node.queue) > 1 or node.shutting_down):
                index = node.queue.pop(0)
                node.running = (index, now + seconds[collection[index]])
                ran[collection[index]] = (node.name, now, node.running[1])
        busy = [node for node in nodes if node.running is not None]
        if not busy:
            break
        node = min(busy, key=lambda candidate: candidate.running[1])
        (index, now), node.running = node.running, None
        scheduler.mark_test_complete(node, index, seconds[collection[index]])
    assert sorted(ran) == sorted(collection), "tests never run: a process waited for a next test forever"
    return ran


def test_a_light_unit_of_many_tests_never_waits_behind_a_heavy_units_tests(tmp_path):
    # Heavy units of one or two long tests (a benchmark, say: a process holding fewer than three tests
    # is given more; the scheduler once gave it a second heavy unit then, and ran them all in one
    # process), and fast tests: single ones, and a unit of many sharing a fixture (a page's
    # browser), collected among them.
    units: dict[str, tuple[str | None, bool]] = {}
    seconds: dict[str, float] = {}

    def add(test: str, unit: str | None, heavy: bool, duration: float) -> None:
        units[test], seconds[test] = (unit, heavy), duration

    for i in range(40):
        add(f"test_single.py::test_{i}", None, False, 1.0)
    for i in range(30):
        add(f"test_page.py::test_{i}", "test_page.py", False, 1.0)
    for i in range(40, 80):
        add(f"test_single.py::test_{i}", None, False, 1.0)
    for name, tests, duration in (("a", 1, 300.0), ("b", 2, 150.0), ("c", 1, 200.0), ("d", 1, 100.0)):
        for i in range(tests):
            add(f"test_heavy_{name}.py::test_{i}", f"test_heavy_{name}.py", True, duration)
    ran = simulate(units, seconds, tmp_path)

    heavy_end = max(end for test, (_, _, end) in ran.items() if "heavy" in test)
    # 750 s of heavy tests in two lanes: 500 s as the queue orders them (b, a, c, d), never one lane's 750.
    assert heavy_end <= 500, f"the heavy tests ended at {heavy_end:g} s: they did not run two at a time"
    end = max(end for _, _, end in ran.values())
    # A process runs its last test once it holds a next one: a single fast test may follow the last heavy one.
    assert end - heavy_end <= 1, f"the suite ended {end - heavy_end:g} s after its last heavy test: tests waited"
    page = {process for test, (process, _, _) in ran.items() if test.startswith("test_page")}
    assert len(page) == 1, page  # the shared fixture's tests kept together
    late = sorted(test for test, (_, _, end) in ran.items() if "heavy" not in test and end > 100)
    assert len(late) <= 1, f"{len(late)} fast tests waited behind heavy ones: {late}"
