"""The harness's packages follow the data, and no package reaches back up (STYLE.md, point 9).

Every import statement of every module under harness/ counts, those inside functions included (a
deferred import is still a dependency). The graph must have no cycle, and each package may import
only the packages listed for it in LAYERS; the commands on top (cli, config, benchmark, ...) may
import anything below them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO_ROOT

HARNESS = REPO_ROOT / "harness"
# What each package (or foundation module) may import from the rest of the harness, in the order the
# data flows. `evaluation` is pure arithmetic on arrays, so it imports none of them; `training` is the
# only package that talks to workers and writes a run as it goes; the report reads finished runs.
LAYERS: dict[str, set[str]] = {
    "progress": set(),
    "data": {"progress"},
    "models": {"progress"},
    "runtime": {"progress"},
    "records": set(),
    "evaluation": set(),
    "training": {"progress", "data", "models", "runtime", "records", "evaluation"},
    "report": {"progress", "records", "evaluation"},
    # A study's runs, each the unit of work: planned, executed (through a runtime and the training loop), committed.
    "study": {"progress", "data", "runtime", "records", "evaluation", "training"},
}
# `cluster` is an executor of studies on Ray, on top like `benchmark`: it joins a cluster and runs the study's runs.
COMMANDS = {"cli", "config", "config_checks", "options", "benchmark", "preflight", "parity_check", "tracking", "gpu_check", "cluster", "app", "serving", "model_registry"}


def module_name(path: Path, root: Path = HARNESS) -> str:
    """harness.data.splits for harness/data/splits.py; harness.data for harness/data/__init__.py."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def harness_modules(root: Path = HARNESS) -> dict[str, Path]:
    """Every module of the harness package by dotted name."""
    return {module_name(path, root): path for path in sorted(root.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The harness modules `path` imports, anywhere in the file; `from a import b` counts as a.b when
    b is a module, else as a."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                     for alias in node.names]
        else:
            continue
        for name in names:
            # `import harness.data.splits` also imports its parent packages, which hold no code that matters here.
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name.startswith("harness"):
                found.add(name)
    return found


def import_graph(root: Path = HARNESS) -> dict[str, set[str]]:
    """Module -> the harness modules it imports (itself left out; a package counts when a module
    takes a name from its __init__.py, which is a dependency like any other)."""
    modules = harness_modules(root)
    known = set(modules)
    return {name: imports_of(path, known) - {name} for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_of(module: str) -> str:
    """The package (or top-level module) a harness module belongs to: harness.data.splits -> data."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "harness"


def backward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import that leaves a package for one it may not use, as 'module -> target'."""
    offenders = []
    for module, targets in sorted(graph.items()):
        layer = layer_of(module)
        if layer not in LAYERS:
            continue  # the commands on top (and harness/__init__.py) may import anything
        for target in sorted(targets):
            target_layer = layer_of(target)
            if target_layer != layer and target_layer not in LAYERS[layer]:
                offenders.append(f"{module} -> {target}")
    return offenders


def test_every_harness_module_belongs_to_a_known_layer_or_is_a_command():
    layers = {layer_of(module) for module in harness_modules()} - {"harness"}
    assert layers <= set(LAYERS) | COMMANDS, f"new top-level names, add them to LAYERS or COMMANDS: {layers - set(LAYERS) - COMMANDS}"


def test_the_harness_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_no_package_imports_one_above_it():
    assert backward_imports(import_graph()) == []


def test_evaluation_and_data_import_no_runtime_training_report_or_command():
    graph = import_graph()
    forbidden = {"runtime", "training", "report", "records"} | COMMANDS
    reached = {f"{module} -> {target}" for module, targets in graph.items() if layer_of(module) in ("evaluation", "data")
               for target in targets if layer_of(target) in forbidden}
    assert reached == set()


@pytest.fixture
def scratch_harness(tmp_path: Path) -> Path:
    """A copy of harness/ to break on purpose."""
    copy = tmp_path / "harness"
    for path in HARNESS.rglob("*.py"):
        target = copy / path.relative_to(HARNESS)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    return copy


def test_a_backward_import_is_caught(scratch_harness: Path):
    metrics = scratch_harness / "evaluation" / "metrics.py"
    metrics.write_text(metrics.read_text() + "\n\ndef _late():\n    from harness.report.verdicts import verdicts\n")
    assert backward_imports(import_graph(scratch_harness)) == ["harness.evaluation.metrics -> harness.report.verdicts"]


def test_an_import_cycle_is_caught(scratch_harness: Path):
    splits = scratch_harness / "data" / "splits.py"
    splits.write_text(splits.read_text() + "\nfrom harness.data.split_plan import plan_splits\n")
    assert any({"harness.data.split_plan", "harness.data.splits"} <= set(component)
               for component in cycles(import_graph(scratch_harness)))
