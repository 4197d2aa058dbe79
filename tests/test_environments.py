"""Worker environments: keyed by their requirements, never half-made, failures explained."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxrbench_worker.worker_folder import WorkerFolder
from harness.runtime.environments import COMPLETE_MARKER, LOCK_FILE, ensure_environment, environment_key


def worker_folder(tmp_path: Path, requirements: str) -> WorkerFolder:
    folder = tmp_path / "toy"
    (folder / "cxrbench_toy").mkdir(parents=True, exist_ok=True)
    (folder / "cxrbench_toy" / "__init__.py").touch()
    (folder / "requirements.txt").write_text(requirements)
    (folder / "worker.toml").write_text('name = "toy"\nbackend = "cxrbench_toy.trainer:Toy"\nrequirements = "requirements.txt"\n')
    return WorkerFolder.read(folder)


def test_key_changes_with_any_pin(tmp_path):
    folder = worker_folder(tmp_path, "numpy==2.4.6\n")
    first = environment_key(folder.requirements.read_text())
    folder.requirements.write_text("numpy==2.4.5\n")
    assert environment_key(folder.requirements.read_text()) != first


def test_environment_is_created_once_and_hashes_what_is_installed(tmp_path):
    folder = worker_folder(tmp_path, "# nothing beyond pip itself\n")
    environment = ensure_environment(folder, cache=tmp_path / "cache")
    assert environment.python.is_file()
    target = environment.python.parents[1]
    assert (target / COMPLETE_MARKER).is_file() and (target / LOCK_FILE).is_file()
    stamp = (target / COMPLETE_MARKER).stat().st_mtime_ns
    again = ensure_environment(folder, cache=tmp_path / "cache")
    assert again == environment and (target / COMPLETE_MARKER).stat().st_mtime_ns == stamp  # reused, not rebuilt


def test_failed_install_names_the_worker_and_file_and_leaves_nothing_usable(tmp_path):
    folder = worker_folder(tmp_path, "this is not a requirement !!\n")
    with pytest.raises(RuntimeError) as caught:
        ensure_environment(folder, cache=tmp_path / "cache")
    message = str(caught.value)
    assert "worker 'toy'" in message and str(folder.requirements) in message and "install.log" in message
    (target,) = [p for p in (tmp_path / "cache" / "envs").iterdir() if p.is_dir()]
    assert not (target / COMPLETE_MARKER).exists()


def test_worker_toml_errors_name_the_file_and_field(tmp_path):
    folder = tmp_path / "broken"
    (folder / "cxrbench_broken").mkdir(parents=True)
    (folder / "cxrbench_broken" / "__init__.py").touch()
    (folder / "worker.toml").write_text('name = "broken"\n')
    with pytest.raises(ValueError, match=r"broken/worker.toml: field 'backend' is required"):
        WorkerFolder.read(folder)
    (folder / "worker.toml").write_text('name = "broken"\nbackend = "cxrbench_broken.trainer:X"\nrequirements = "missing.txt"\n')
    with pytest.raises(ValueError, match=r"field 'requirements' names 'missing.txt', which does not exist"):
        WorkerFolder.read(folder)
