"""Worker environments: installed from their lock with hash checking, keyed by the lock's hash,
never half-made, a stale lock refused, a version without a lock resolved first; failures explained.

Installs use wheels made on the spot and a folder index (tests/local_packages.py): no network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from cxrbench_worker.locks import LockError, lock_path
from cxrbench_worker.worker_folder import WorkerFolder
from harness.runtime.registry import WorkerSpec, discover_workers
from harness.runtime import environments, worker_locks
from harness.runtime.environments import (COMPLETE_MARKER, FREEZE_FILE, INSTALL_LOG, LOCK_FILE, WorkerEnvironment,
                                          ensure_environment, environment_key, environment_path, install_command)
from harness.runtime import local
from harness.runtime.local import LocalRuntime, LocalWorker
from harness.runtime.worker_locks import Lock, cached_lock_path, lock_workers
from local_packages import make_wheel, toy_workers


@pytest.fixture
def toy(tmp_path, monkeypatch) -> tuple[WorkerFolder, Path]:
    """Worker "toy" with its committed locks (made offline), and the folder of its wheels."""
    root, wheels = toy_workers(tmp_path, monkeypatch)
    lock_workers(root=root)
    return WorkerFolder.read(root / "toy"), wheels


def test_environment_key_is_the_hash_of_the_committed_lock_and_moves_with_its_text(tmp_path):
    keras = discover_workers()["keras"]
    assert environment_path(keras, cache=tmp_path).name == f"keras-{environment_key(lock_path(keras).read_text())}"
    assert environment_path(keras, tmp_path, "3.14.0").name == f"keras-{environment_key(lock_path(keras, '3.14.0').read_text())}"

    copy = tmp_path / "keras"
    shutil.copytree(keras.path / "locks", copy / "locks")
    for name in ("worker.toml", "cxrbench_keras/__init__.py", *(path.name for path in keras.path.glob("requirements*.txt"))):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(keras.path / name, copy / name)
    relocked = lock_path(WorkerFolder.read(copy))
    relocked.write_text(relocked.read_text().replace("keras==3.15.1 \\\n", "keras==3.15.1 \\\n    --hash=sha256:" + "0" * 64 + " \\\n"))
    assert environment_path(WorkerFolder.read(copy), cache=tmp_path).name != environment_path(keras, cache=tmp_path).name


def test_install_command_checks_every_hash_and_installs_nothing_beyond_the_lock():
    command = install_command(Path("/env/bin/python"), Path("/env/requirements.lock"))
    assert command[:4] == ["/env/bin/python", "-m", "pip", "install"]
    assert "--require-hashes" in command and "--no-deps" in command
    assert "--no-compile" in command  # the modules a worker imports are compiled then, not all of them now
    assert command[-2:] == ["-r", "/env/requirements.lock"]


def test_environment_is_installed_from_its_lock_once_with_hash_checking(toy, tmp_path):
    folder, _ = toy
    environment = ensure_environment(folder, cache=tmp_path / "cache")
    target = environment.python.parents[1]
    assert target.name == f"toy-{environment_key(lock_path(folder).read_text())}" == f"toy-{environment.key}"
    assert (target / LOCK_FILE).read_text() == lock_path(folder).read_text()
    assert (target / COMPLETE_MARKER).is_file()
    log = (target / INSTALL_LOG).read_text()
    assert log.startswith(f"# from {lock_path(folder)}\n$ {' '.join(install_command(environment.python, target / LOCK_FILE))}\n")
    freeze = (target / FREEZE_FILE).read_text()
    assert "toyframework==1.0" in freeze and "toyhelper==2.1" in freeze and "toypin==1.0" in freeze
    imported = subprocess.run([str(environment.python), "-c", "import toyframework, toyhelper; print(toyhelper.VERSION)"],
                              capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "2.1"

    stamp = (target / COMPLETE_MARKER).stat().st_mtime_ns
    again = ensure_environment(folder, cache=tmp_path / "cache")
    assert again == environment and (target / COMPLETE_MARKER).stat().st_mtime_ns == stamp  # reused, not rebuilt


def test_a_wheel_that_does_not_match_the_locked_hash_is_refused_and_nothing_usable_is_left(toy, tmp_path):
    folder, wheels = toy
    make_wheel(wheels, "toyhelper", "2.1", requires=("os-sys",))  # same name and version, other bytes
    with pytest.raises(RuntimeError) as caught:
        ensure_environment(folder, cache=tmp_path / "cache")
    message = str(caught.value)
    assert "worker 'toy'" in message and str(lock_path(folder)) in message and INSTALL_LOG in message
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in message
    (target,) = [p for p in (tmp_path / "cache" / "envs").iterdir() if p.is_dir()]
    assert not (target / COMPLETE_MARKER).exists()


def test_a_stale_committed_lock_is_refused_with_the_command_that_renews_it(toy, tmp_path):
    folder, _ = toy
    folder.requirements.write_text("toyframework==1.0\ntoypin==1.1\n")
    with pytest.raises(LockError, match=r"locks/1.0-cpu.txt: stale: .*run `harness workers lock toy@1.0`"):
        ensure_environment(folder, cache=tmp_path / "cache")
    assert not (tmp_path / "cache" / "envs").exists()


def test_a_version_without_a_committed_lock_is_resolved_into_the_cache_first_and_then_reused(toy, tmp_path, monkeypatch, capsys):
    folder, _ = toy
    cache = tmp_path / "cache"
    assert environment_path(folder, cache, "1.1") is None  # not known before it is resolved
    installed: list[str] = []

    def install(target: Path, lock: Lock, worker: str) -> None:  # installing is tested above; this is about the lock
        installed.append(lock.text)
        (target / "bin").mkdir(parents=True)
        (target / COMPLETE_MARKER).write_text("ok\n")

    monkeypatch.setattr(environments, "_install", install)
    environment = ensure_environment(folder, cache=cache, version="1.1")
    cached = cached_lock_path(folder, "1.1", cache / "locks")
    said = capsys.readouterr().err
    assert (f"worker 'toy@1.1' has no committed lock ({lock_path(folder, '1.1')}): resolving one with uv into {cached}; "
            "`harness workers lock toy@1.1` would commit it") in said
    assert "toyframework==1.1 " in cached.read_text() and not lock_path(folder, "1.1").exists()
    assert environment.python.parents[1] == environment_path(folder, cache, "1.1")
    assert environment.key == environment_key(cached.read_text()) and installed == [cached.read_text()]

    def no_uv() -> str:
        raise AssertionError("resolved again")

    monkeypatch.setattr(worker_locks, "uv_binary", no_uv)
    assert ensure_environment(folder, cache=cache, version="1.1") == environment and len(installed) == 1


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


def test_the_null_worker_runs_in_the_harness_interpreter_without_a_lock(tmp_path):
    null = discover_workers()["null"]
    environment = ensure_environment(null, tmp_path)
    assert environment.key == "host" and not (REPO_ROOT / "workers" / "null" / "locks").exists()


def test_the_cuda_device_gets_each_workers_gpu_lock_cached_under_its_own_key(tmp_path):
    # --device cuda: the local runtime installs what the GPU images install (TensorFlow's CUDA build).
    tensorflow = discover_workers()["tensorflow"]
    cpu, gpu = environment_path(tensorflow, tmp_path), environment_path(tensorflow, tmp_path, gpu=True)
    assert cpu != gpu
    assert gpu.name == f"tensorflow-{environment_key(lock_path(tensorflow, gpu=True).read_text())}"
    gpu_lock = lock_path(tensorflow, gpu=True).read_text()
    assert "\ntensorflow==2.21.0 " in gpu_lock and "\nnvidia-cudnn-cu12==" in gpu_lock  # not tensorflow-cpu


def toy_with_a_variant(root: Path) -> WorkerFolder:
    """A worker whose backend (the null worker's) reports the variable its variant sets; it runs in
    this interpreter, so no environment is built."""
    folder = root / "toy"
    (folder / "cxrbench_toy").mkdir(parents=True)
    (folder / "cxrbench_toy" / "__init__.py").touch()
    (folder / "cxrbench_toy" / "trainer.py").write_text(
        "import os\nfrom dataclasses import replace\nfrom cxrbench_null.trainer import NullBackend\n\n\n"
        "class Toy(NullBackend):\n    def metadata(self):\n        meta = super().metadata()\n"
        "        return replace(meta, framework_versions={**meta.framework_versions, 'mode': os.environ['TOY_MODE']})\n")
    (folder / "requirements.txt").write_text("toy==1.0\n")
    (folder / "requirements-fast.txt").write_text("toy==1.0\n")
    (folder / "worker.toml").write_text(
        'name = "toy"\nbackend = "cxrbench_toy.trainer:Toy"\nrequirements = "requirements.txt"\n'
        '[environment]\nTOY_MODE = "plain"\n'
        '[variants.fast]\nrequirements = "requirements-fast.txt"\nenvironment = { TOY_MODE = "fast" }\n')
    return WorkerFolder.read(folder)


def test_a_variant_gets_its_environment_variables_before_its_backend_is_imported(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO_ROOT / "workers" / "null"), os.environ.get("PYTHONPATH", "")]))
    toy = toy_with_a_variant(tmp_path)
    here = WorkerEnvironment(Path(sys.executable), "host", "-")
    for folder, mode in ((toy, "plain"), (toy.with_variant("fast"), "fast")):
        with LocalWorker(folder, here, tmp_path / f"{folder.label}.log") as worker:
            metadata = worker.start().metadata()
            assert (worker.label, metadata.worker, metadata.framework_versions["mode"]) == (folder.label, folder.label, mode)
    assert "--variant" not in ensure_command_line(toy) and ensure_command_line(toy.with_variant("fast"))[-2:] == [
        "--variant", "fast"]


def ensure_command_line(folder: WorkerFolder) -> list[str]:
    """The command LocalWorker starts for `folder` (as its process's arguments)."""
    worker = LocalWorker(folder, WorkerEnvironment(Path(sys.executable), "host", "-"), Path("unused.log"))
    try:
        return worker.command()
    finally:
        worker.stop()


def test_the_worker_process_refuses_an_unknown_variant_before_it_imports_anything(tmp_path):
    result = subprocess.run([sys.executable, "-m", "cxrbench_worker", "--worker-dir", str(REPO_ROOT / "workers" / "keras"),
                             "--variant", "tf"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                [str(REPO_ROOT / "proto"), str(REPO_ROOT / "workers" / "common")])})
    assert result.returncode == 2
    assert "worker: error: worker 'keras' has no variant 'tf' (its variants: jax, torch)" in result.stderr


def test_missing_environments_are_built_two_at_a_time_and_all_finish_before_an_error_is_raised(monkeypatch, tmp_path):
    workers = discover_workers()
    specs = [WorkerSpec(workers[name]) for name in ("pytorch", "tensorflow", "jax")]
    both_building, finished = threading.Barrier(2, timeout=10), []

    def build(folder, cache, version=None, gpu=False):
        if folder.name != "jax":
            both_building.wait()  # pytorch's and tensorflow's builds meet: they run at the same time
        if folder.name == "tensorflow":
            raise RuntimeError("tensorflow's build failed")
        finished.append(folder.name)
        return WorkerEnvironment(Path(sys.executable), folder.name, "sha")

    monkeypatch.setattr(local, "ensure_environment", build)
    monkeypatch.setattr(local, "ENVIRONMENT_BUILDS_AT_ONCE", 2)
    with pytest.raises(RuntimeError, match="tensorflow's build failed"):
        LocalRuntime(tmp_path).prepare(specs)
    assert sorted(finished) == ["jax", "pytorch"]  # the failure left the other builds to finish
