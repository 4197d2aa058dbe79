"""How the tests are shared among pytest-xdist's processes: heavy tests in units, at most a few at once.

A framework test file starts a worker (a framework imported, a network built and compiled: seconds to
minutes of CPU, and GBs) once for the file, in a module- or session-scoped fixture. Spread test by test
over four processes (`--dist load`), each process would start its own copy of that worker; all at once,
four such workers on two cores starve one another until their watchdogs fire. pytest-xdist's own
`--dist loadgroup` would keep them together, but with pytest 9.2 it groups nothing (xdist 3.8 writes a
test's group into `item._nodeid`, which pytest 9.2 no longer reads). So this plugin schedules itself:

- A test is in a *unit* that runs in one process, tests in collection order:
  - a Ray cluster test (`cluster`) or a test with `xdist_group(name)`: that group, one for all its files;
  - a test that uses a module-, package- or session-scoped fixture of its own file (a worker, a
    registry, a browser): its file, and in that file the value of every parameter such a fixture
    takes (the conformance suite's worker), so the tests sharing one stay together and it is made once,
    while the suite's six workers can run in different processes;
  - any other test: itself, so tests that share nothing spread over every process as `--dist load`
    would (the two `--workers all` dataset benchmarks, say, run side by side).
- A unit holding a framework or cluster test, or an `xdist_group` (the browser tests), is *heavy*;
  at most HEAVY_UNITS_AT_ONCE heavy units run at a time (one per core: each keeps about a core busy). A process that could only take
  a heavy unit waits; the longest heavy units go first, so the suite ends soon after the last fast
  test. How long a unit takes is what it took last time: pytest's cache (`.pytest_cache`) where
  there is one, else tests/heavy_units.json, committed (refresh it with `tests/scheduling.py --save`,
  see below).

Workers report each test's unit in a file (the markers are only known where tests are collected); the
controller reads it when every worker has collected. Without it, every test is its own light unit.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

# The heavy units that may run at once: one per core, at least two. One more (three on 2 cores) kept
# the CPUs busier but two framework tests failed (issue 19, third session); two at a time passed in
# 81 min. The environment variable sets it, for this plugin's own test.
HEAVY_UNITS_AT_ONCE = int(os.environ.get("CXRBENCH_HEAVY_TESTS_AT_ONCE", max(2, os.cpu_count() or 2)))
UNITS_FILE_OPTION = "cxrbench_units_file"  # in each xdist worker's workerinput
_UNITS_FILE = pytest.StashKey[Path]()
_SCHEDULER = pytest.StashKey["HeavyUnitScheduling"]()
# Seconds each heavy unit took, last time: in pytest's cache, and as committed for a fresh clone.
DURATIONS_CACHE_KEY = "cxrbench/heavy-unit-seconds"
COMMITTED_DURATIONS = Path(__file__).with_name("heavy_units.json")


def unit_of(item: pytest.Item) -> tuple[str | None, bool]:
    """The unit `item` belongs to (None: itself alone) and whether it is heavy."""
    framework = item.get_closest_marker("framework") is not None
    cluster = item.get_closest_marker("cluster") is not None
    groups = sorted({str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                     for mark in item.iter_markers("xdist_group")})
    if cluster:
        groups = sorted({*groups, "cluster"})
    # An xdist_group (the cluster's, the browser tests') is heavy too: beside two heavy units, the browser
    # tests' uploads were lost to the page's reruns in 2 of 4 full runs (issue 19, seventh session).
    heavy = framework or cluster or bool(groups)
    if groups:
        return "group:" + "+".join(groups), heavy
    shared = _shared_fixtures(item)
    if shared:
        return f"{item.nodeid.split('::', 1)[0]}{_shared_parameters(item, shared)}", heavy
    return None, heavy


def _shared_fixtures(item: pytest.Item) -> set[str]:
    """The fixtures `item` uses that are wider than a test and defined in its own file. A conftest's
    (environments made once, runs shared through a file lock) does not tie tests together."""
    module = item.nodeid.split("::", 1)[0]
    definitions = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    return {name for name, defs in definitions.items()
            if defs and defs[-1].scope in ("module", "package", "session")
            and defs[-1].baseid.split("::", 1)[0] == module}


def _shared_parameters(item: pytest.Item, shared: set[str]) -> str:
    """`[name=value,...]` for the parameters of `item` that the `shared` fixtures take."""
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return ""
    values = [f"{name}={value!r}" for name, value in callspec.params.items() if name in shared]
    return f"[{','.join(values)}]" if values else ""


def _units_file(config: pytest.Config) -> Path:
    """In the controller: where the workers write each test's unit (a folder of its own, made once)."""
    if _UNITS_FILE not in config.stash:
        config.stash[_UNITS_FILE] = Path(tempfile.mkdtemp(prefix="cxrbench-test-units-")) / "units.json"
    return config.stash[_UNITS_FILE]


def pytest_configure_node(node: Any) -> None:
    """Tell each xdist worker where to write the units."""
    node.workerinput[UNITS_FILE_OPTION] = str(_units_file(node.config))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In the controller: the seconds each heavy unit took, for the next run's order (pytest's cache)."""
    scheduler = session.config.stash.get(_SCHEDULER, None)
    cache = getattr(session.config, "cache", None)
    if scheduler is not None and cache is not None and scheduler.seconds:
        cache.set(DURATIONS_CACHE_KEY, {**scheduler.estimates, **scheduler.finished_seconds()})


def pytest_unconfigure(config: pytest.Config) -> None:
    """The units file's folder goes with the session."""
    if _UNITS_FILE in config.stash:
        shutil.rmtree(config.stash[_UNITS_FILE].parent, ignore_errors=True)


@pytest.hookimpl(trylast=True)  # after every hook that adds markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist worker: every test's unit and weight, written for the controller (whole or not at all)."""
    target = getattr(config, "workerinput", {}).get(UNITS_FILE_OPTION)
    if target is None:
        return
    units = {item.nodeid: unit_of(item) for item in items}
    partial = Path(f"{target}.{config.workerinput['workerid']}")
    partial.write_text(json.dumps(units))
    partial.replace(target)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LoadScopeScheduling | None:
    """This scheduler for `--dist load` (the default with -n); any other --dist as xdist has it."""
    if config.getvalue("dist") != "load":
        return None
    scheduler = HeavyUnitScheduling(config, log, _units_file(config), last_durations(config))
    config.stash[_SCHEDULER] = scheduler
    return scheduler


def last_durations(config: pytest.Config) -> dict[str, float]:
    """Seconds per heavy unit as last measured: pytest's cache, else the committed file, else none."""
    cache = getattr(config, "cache", None)
    cached = cache.get(DURATIONS_CACHE_KEY, None) if cache is not None else None
    if cached:
        return dict(cached)
    try:
        return dict(json.loads(COMMITTED_DURATIONS.read_text()))
    except (OSError, ValueError):
        return {}


class HeavyUnitScheduling(LoadScopeScheduling):
    """xdist's scope scheduling with the units above, and at most `heavy_at_once` heavy units running."""

    def __init__(self, config: pytest.Config, log: Any, units_file: Path, estimates: dict[str, float],
                 heavy_at_once: int = HEAVY_UNITS_AT_ONCE) -> None:
        super().__init__(config, log)
        self.units_file = units_file
        self.estimates = estimates
        self.heavy_at_once = heavy_at_once
        self.seconds: dict[str, float] = {}  # heavy unit: seconds its ended tests took, this run
        self._units: dict[str, tuple[str | None, bool]] | None = None
        self.heavy_scopes: set[str] = set()

    def units(self) -> dict[str, tuple[str | None, bool]]:
        if self._units is None:
            try:
                self._units = {nodeid: (unit, heavy) for nodeid, (unit, heavy)
                               in json.loads(self.units_file.read_text()).items()}
            except (OSError, ValueError):  # no worker wrote it: every test alone, as --dist load
                self._units = {}
        return self._units

    def _split_scope(self, nodeid: str) -> str:
        unit, heavy = self.units().get(nodeid, (None, False))
        scope = unit or nodeid
        if heavy:
            self.heavy_scopes.add(scope)
        return scope

    def schedule(self) -> None:
        """Once every worker has collected: the work queue (heavy units first, the longest first, as
        last measured, then by their number of tests; then the light ones in collection order), and each
        process's first work."""
        assert self.collection_is_completed
        if self.collection is None:
            if not self._check_nodes_have_same_collection():
                self.log("**Different tests collected, aborting run**")
                return
            self.collection = list(next(iter(self.registered_collections.values())))
            units: dict[str, dict[str, bool]] = {}
            for nodeid in self.collection:
                units.setdefault(self._split_scope(nodeid), {})[nodeid] = False
            unknown = statistics.median(self.estimates.values()) if self.estimates else 0.0  # a new unit
            heavy = sorted((scope for scope in units if scope in self.heavy_scopes),
                           key=lambda scope: (-self.estimates.get(scope, unknown), -len(units[scope])))
            # Light units of many tests (a shared fixture) first, while every process is busy; single tests
            # last, to fill the processes' ends evenly (sorted is stable: collection order otherwise).
            light = sorted((scope for scope in units if scope not in self.heavy_scopes), key=lambda s: -len(units[s]))
            for scope in [*heavy, *light]:
                self.workqueue[scope] = units[scope]
        for node in self.nodes:
            self._reschedule(node)

    def heavy_running(self, node: Any) -> int:
        """Other processes holding heavy tests yet to end: the heavy lanes besides `node`'s own. A process
        runs one test at a time, so a lane holding its running unit and the next runs one heavy unit; and
        a process with one test left is given its next heavy unit before xdist runs that test (it runs
        a process's last test only once it has the next), so its own lane goes on."""
        return sum(1 for other in self.assigned_work if other is not node and self._holds_heavy_tests(other))

    def _reschedule(self, node: Any) -> None:
        """Top the node up to three tests or more (a process runs a test once it has the next), with
        every unit that may start now; shut it down once nothing is left to give."""
        if node.shutting_down:
            return
        if not self.workqueue:
            node.shutdown()
            return
        while self._pending_of(self.assigned_work[node]) <= 2 and self._assign_work_unit(node):
            pass
        # Only heavy units are left, for other processes to take in turn: this one's last test would
        # wait for a next one until the very end; told it gets none, it runs that test now and stops.
        others = [other for other in self.nodes if other is not node and not other.shutting_down]
        if (self._pending_of(self.assigned_work[node]) <= 1 and len(others) >= self.heavy_at_once
                and all(scope in self.heavy_scopes for scope in self.workqueue)):
            node.shutdown()

    def _assign_work_unit(self, node: Any) -> bool:
        """The first unit in the queue that may start now (any light one; a heavy one while fewer than
        `heavy_at_once` run), sent to `node`; False when none may: the node waits for the next test to
        end anywhere (mark_test_complete).

        What a process is given runs after the tests it holds. Behind a heavy unit's tests (minutes each)
        it gets nothing while it holds two or more (it runs the first: it has a next); with one left, which
        xdist runs only once it has a next, the next heavy unit that may start, else a single fast test,
        else the smallest light unit. Given the next light unit in the queue, a process once held a
        light unit of many tests behind a heavy test that ran alone at the very end, the other
        processes idle for half an hour (issue 19)."""
        room = self.heavy_running(node) < self.heavy_at_once
        allowed = [scope for scope in self.workqueue if room or scope not in self.heavy_scopes]
        if self._holds_heavy_tests(node):
            if self._pending_of(self.assigned_work[node]) > 1:
                return False
            light = sorted((scope for scope in allowed if scope not in self.heavy_scopes),
                           key=lambda scope: len(self.workqueue[scope]))
            allowed = [scope for scope in allowed if scope in self.heavy_scopes][:1] or light[:1]
        scope = next(iter(allowed), None)
        if scope is None:
            return False
        work_unit = self.workqueue.pop(scope)
        self.assigned_work[node][scope] = work_unit
        collection = self.registered_collections[node]
        node.send_runtest_some([collection.index(nodeid) for nodeid, done in work_unit.items() if not done])
        return True

    def _holds_heavy_tests(self, node: Any) -> bool:
        """Whether `node` has tests of a heavy unit yet to run."""
        return any(scope in self.heavy_scopes and not all(tests.values())
                   for scope, tests in self.assigned_work[node].items())

    def finished_seconds(self) -> dict[str, float]:
        """Seconds each heavy unit whose every test ended took, this run."""
        return {scope: seconds for scope, seconds in self.seconds.items()
                if all(all(work[scope].values()) for work in self.assigned_work.values() if scope in work)}

    def mark_test_complete(self, node: Any, item_index: int, duration: float = 0) -> None:
        scope = self._split_scope(self.registered_collections[node][item_index])
        if scope in self.heavy_scopes:
            self.seconds[scope] = self.seconds.get(scope, 0.0) + duration
        super().mark_test_complete(node, item_index, duration)
        # A heavy unit may have just ended: a process that waited may take the next.
        for other in self.nodes:
            if other is not node:
                self._reschedule(other)


if __name__ == "__main__":  # `python tests/scheduling.py --save`: pytest's cached durations, committed
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--save", action="store_true", help=f"write the last run's durations to {COMMITTED_DURATIONS}")
    if parser.parse_args().save:
        cached = Path(__file__).parents[1] / ".pytest_cache" / "v" / DURATIONS_CACHE_KEY
        durations = json.loads(cached.read_text())
        COMMITTED_DURATIONS.write_text(json.dumps({unit: round(seconds) for unit, seconds in sorted(durations.items())},
                                                  indent=1) + "\n")
        print(f"{len(durations)} heavy units' durations written to {COMMITTED_DURATIONS}")
