"""Worker code is one package per worker, `workers/<name>/cxrbench_<name>/`, imported by that name
alone: no worker module can shadow an installed package or another worker's module.

File checks for every worker folder, and the loader itself with the null worker and a copy of it,
so no framework is needed.
"""

from __future__ import annotations

import ast
import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from cxrbench_worker.worker_folder import WorkerFolder
from harness.runtime.registry import discover_workers

WORKERS = discover_workers()
# What a worker folder holds besides its package: no Python module among them.
FOLDER_FILES = ("worker.toml", "requirements.txt", "locks")


def test_every_worker_folder_holds_its_package_and_no_top_level_module():
    for name, folder in WORKERS.items():
        assert folder.package == f"cxrbench_{name}"
        entries = sorted(path.name for path in folder.path.iterdir() if path.name != "__pycache__")
        others = [entry for entry in entries if entry != folder.package
                  and entry not in FOLDER_FILES and not (entry.startswith("requirements") and entry.endswith(".txt"))]
        assert others == [], f"{folder.path}: only worker.toml, requirements, locks/, {folder.package}/ belong here"
        assert (folder.path / folder.package / "__init__.py").is_file()


def test_worker_package_names_are_distinct_and_taken_by_no_installed_or_standard_module():
    packages = [folder.package for folder in WORKERS.values()]
    assert len(set(packages)) == len(packages) == len(WORKERS)
    for package in packages:
        assert package not in sys.stdlib_module_names
        assert package not in sys.modules or Path(sys.modules[package].__file__).is_relative_to(REPO_ROOT / "workers")
        if package not in sys.modules:
            assert importlib.util.find_spec(package) is None, f"{package} is installed: a worker would hide it"


def test_worker_modules_import_their_siblings_relatively_never_by_a_bare_name():
    # A bare `import model` is what let one worker's module shadow another's or an installed one.
    module_names = {path.stem for folder in WORKERS.values() for path in (folder.path / folder.package).glob("*.py")}
    offenders = []
    for folder in WORKERS.values():
        for path in sorted((folder.path / folder.package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name.split(".")[0] for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module.split(".")[0]]
                else:
                    continue
                offenders += [f"{path.relative_to(REPO_ROOT)}:{node.lineno} imports {name}"
                              for name in names if name in module_names - {"__init__"}]
    assert offenders == []


@pytest.fixture
def clean_imports():
    """Forget the worker packages a test imported, and check it left sys.path alone."""
    before_modules, before_path = set(sys.modules), list(sys.path)
    yield
    assert sys.path == before_path, "loading a backend must not put its folder on sys.path"
    for name in set(sys.modules) - before_modules:
        if name.split(".")[0].startswith("cxrbench_") and name.split(".")[0] != "cxrbench_worker":
            del sys.modules[name]


def copy_of_null_worker(root: Path, name: str) -> Path:
    """The null worker copied to `root/name`, its package renamed to cxrbench_<name>."""
    folder = root / name
    shutil.copytree(WORKERS["null"].path, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "cxrbench_null").rename(folder / f"cxrbench_{name}")
    (folder / "worker.toml").write_text(f'name = "{name}"\nbackend = "cxrbench_{name}.trainer:NullBackend"\n'
                                        'listed = false\n')
    return folder


def test_two_workers_with_same_module_names_load_side_by_side_in_one_interpreter(tmp_path, clean_imports):
    toy_path = copy_of_null_worker(tmp_path, "toy")
    # A stray top-level module named like a standard one: loading the worker must not make it importable.
    (toy_path / "json.py").write_text("raise AssertionError('the worker folder shadowed json')\n")
    (toy_path / "trainer.py").write_text("raise AssertionError('a bare trainer module was imported')\n")

    null, toy = WORKERS["null"].load_backend(), WorkerFolder.read(toy_path).load_backend()

    assert type(null).__module__ == "cxrbench_null.trainer" and type(toy).__module__ == "cxrbench_toy.trainer"
    assert type(null) is not type(toy)
    assert Path(sys.modules["cxrbench_null.trainer"].__file__) == WORKERS["null"].path / "cxrbench_null" / "trainer.py"
    assert Path(sys.modules["cxrbench_toy.trainer"].__file__) == toy_path / "cxrbench_toy" / "trainer.py"
    assert "trainer" not in sys.modules
    assert not importlib.util.find_spec("json").origin.startswith(str(tmp_path))
    assert importlib.util.find_spec("trainer") is None


def test_a_package_name_already_imported_from_another_folder_is_refused(tmp_path, clean_imports):
    first = WorkerFolder.read(copy_of_null_worker(tmp_path / "a", "toy"))
    second = WorkerFolder.read(copy_of_null_worker(tmp_path / "b", "toy"))
    first.load_backend()
    first.load_backend()  # the same folder again is fine
    with pytest.raises(ValueError, match=r"b/toy/worker.toml: package 'cxrbench_toy' is already imported from .*a/toy"):
        second.load_backend()


@pytest.mark.parametrize(("toml", "message"), [
    ('name = "toy"\nbackend = "trainer:NullBackend"\n',
     r"toy/worker.toml: field 'backend' must name a module of the worker's own package 'cxrbench_toy'"),
    ('name = "toy"\nbackend = "cxrbench_null.trainer:NullBackend"\n',
     r"toy/worker.toml: field 'backend' must name a module of the worker's own package 'cxrbench_toy'"),
    ('name = "toy"\nbackend = "cxrbench_toy:NullBackend"\n',
     r"toy/worker.toml: field 'backend' must name a module of the worker's own package 'cxrbench_toy'"),
    ('name = "toy"\nbackend = "cxrbench_toy.trainer"\n',
     r"toy/worker.toml: field 'backend' must look like 'cxrbench_toy.module:Class'"),
    ('name = "worker"\nbackend = "cxrbench_worker.trainer:NullBackend"\n',
     r"toy/worker.toml: field 'name' is 'worker', which cannot name the worker's package"),
    ('name = "my-toy"\nbackend = "cxrbench_my-toy.trainer:NullBackend"\n',
     r"toy/worker.toml: field 'name' is 'my-toy', which cannot name the worker's package"),
])
def test_a_backend_outside_the_workers_own_package_names_the_file_and_field(tmp_path, toml, message):
    folder = copy_of_null_worker(tmp_path, "toy")
    (folder / "worker.toml").write_text(toml)
    with pytest.raises(ValueError, match=message):
        WorkerFolder.read(folder)


def test_a_missing_package_folder_names_the_file_and_field_unless_only_requirements_are_read(tmp_path):
    folder = copy_of_null_worker(tmp_path, "toy")
    shutil.rmtree(folder / "cxrbench_toy")
    with pytest.raises(ValueError, match=r"toy/worker.toml: field 'backend' names package 'cxrbench_toy', but "
                                         r".*cxrbench_toy/__init__.py does not exist"):
        WorkerFolder.read(folder)
    # An image's requirements stage has worker.toml and the requirements alone.
    assert WorkerFolder.read(folder, require_package=False).package == "cxrbench_toy"
