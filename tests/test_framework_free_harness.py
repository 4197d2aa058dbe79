"""DESIGN invariant 1: the harness never imports a deep-learning framework; workers compute no metric."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT

FRAMEWORKS = ("torch", "torchvision", "tensorflow", "keras", "jax", "jaxlib", "flax")
# Code that runs in the harness process: the harness, the contract package and the worker SDK.
HARNESS_SIDE = ("harness", "proto/cxrbench", "workers/common")
# SDK modules that only framework workers call, and the framework each may import, inside its
# functions alone (importing the module loads nothing; the test below imports every SDK module).
FRAMEWORK_HELPERS = {"workers/common/cxrbench_worker/tensorflow_settings.py": {"tensorflow"},
                     "workers/common/cxrbench_worker/jax_settings.py": {"jax", "jaxlib"},
                     "workers/common/cxrbench_worker/torch_settings.py": {"torch"}}


def imported_top_level_modules(path: Path) -> set[str]:
    """Top-level module names of every import statement in a Python file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def imported_outside_functions(path: Path) -> set[str]:
    """Top-level module names imported anywhere but inside a function body."""
    tree = ast.parse(path.read_text(), filename=str(path))
    in_functions = {id(node) for function in ast.walk(tree)
                    if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
                    for node in ast.walk(function) if node is not function}
    names = set()
    for node in ast.walk(tree):
        if id(node) in in_functions:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_harness_side_source_file_imports_a_framework():
    offenders = []
    for folder in HARNESS_SIDE:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            relative = path.relative_to(REPO_ROOT).as_posix()
            allowed = FRAMEWORK_HELPERS.get(relative, set())
            found = (imported_top_level_modules(path) - allowed) & set(FRAMEWORKS)
            found |= imported_outside_functions(path) & set(FRAMEWORKS)
            if found:
                offenders.append(f"{relative}: {sorted(found)}")
    assert offenders == []


def test_the_harness_never_uses_the_sdks_framework_helpers():
    helpers = {"cxrbench_worker." + Path(relative).stem for relative in FRAMEWORK_HELPERS}
    offenders = []
    for path in sorted((REPO_ROOT / "harness").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                used = {alias.name for alias in node.names} & helpers
            elif isinstance(node, ast.ImportFrom) and node.module:
                used = ({node.module} | {f"{node.module}.{alias.name}" for alias in node.names}) & helpers
            else:
                continue
            offenders += [f"{path.relative_to(REPO_ROOT)}:{node.lineno} imports {name}" for name in sorted(used)]
    assert offenders == []


def test_importing_every_harness_module_loads_no_framework():
    # A fresh interpreter whose import system refuses the frameworks: any import, even an indirect
    # one through a third-party package, fails loudly.
    script = f"""
import importlib, pkgutil, sys
FRAMEWORKS = {FRAMEWORKS!r}
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FRAMEWORKS:
            raise ImportError("harness imported " + name)
sys.meta_path.insert(0, Refuse())
import harness, cxrbench_worker
for package in (harness, cxrbench_worker):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if module.name != "cxrbench_worker.__main__":
            importlib.import_module(module.name)
import cxrbench.worker.v1.tensors, cxrbench.worker.v1.worker_pb2_grpc
loaded = sorted(name for name in sys.modules if name.split(".")[0] in FRAMEWORKS)
print("loaded:", loaded)
assert not loaded
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert "loaded: []" in result.stdout


def test_no_worker_computes_a_metric():
    # Workers return logits; AUROC & co. live in harness/evaluation/metrics.py alone.
    metric_modules = {"sklearn", "harness", "torchmetrics", "scipy"}
    offenders = []
    for path in sorted((REPO_ROOT / "workers").rglob("*.py")):
        found = imported_top_level_modules(path) & metric_modules
        if found:
            offenders.append(f"{path.relative_to(REPO_ROOT)}: {sorted(found)}")
    assert offenders == []


def test_the_tensorflow_worker_uses_no_keras():
    # The TensorFlow worker is TensorFlow without Keras: no `import keras`, no tf.keras attribute.
    offenders = []
    for path in sorted((REPO_ROOT / "workers" / "tensorflow").rglob("*.py")):
        source = path.read_text()
        if "keras" in imported_top_level_modules(path) or "tf.keras" in source or "tensorflow.keras" in source:
            offenders.append(str(path.relative_to(REPO_ROOT)))
    assert offenders == []
