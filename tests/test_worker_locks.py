"""Worker locks: every committed lock matches its requirements, a changed pin is caught with the
command that fixes it, and `harness workers lock` writes, keeps and renews locks.

Resolution here uses wheels made on the spot and a folder index (tests/local_packages.py): no
network. The committed locks were resolved against PyPI by `harness workers lock`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from cxrbench_worker.locks import (HASH_LINE, LockError, current_lock_text, lock_path, locked_pins, relock_command,
                                   requirements_sha256)
from cxrbench_worker.requirements import pinned_version, requirements_text
from cxrbench_worker.worker_folder import WorkerFolder
from harness import cli
from harness.runtime.registry import discover_workers
from harness.runtime import worker_locks
from harness.runtime.worker_locks import lock_workers
from local_packages import make_wheel, sha256_of, toy_workers

# Every worker with requirements, and each as each of its variants (keras[jax], keras[torch]).
LOCKED_WORKERS = [folder.with_variant(variant) for folder in discover_workers().values()
                  if folder.requirements is not None for variant in (None, *folder.variant_names)]
LOCKED_IDS = [folder.label for folder in LOCKED_WORKERS]
LOCK_NAME = re.compile(r"^(?P<version>[0-9][0-9A-Za-z.+!_]*)(?:-(?P<variant>[a-z][a-z0-9_]*))?-(?P<kind>cpu|gpu)\.txt$")


def lock_problems(folder: WorkerFolder) -> list[str]:
    """Why the worker's committed locks (of its variant, for a variant) are not all current (empty: they
    are). Each lock file must be named <version>[-<variant>]-cpu.txt or -gpu.txt, with a variant the
    worker declares, and the pinned version must have both."""
    problems: list[str] = []
    versions = {pinned_version(folder)}
    for path in sorted((folder.path / "locks").glob("*")):
        name = LOCK_NAME.match(path.name)
        if name is None or (name["variant"] and name["variant"] not in folder.variant_names):
            problems.append(f"{path}: not a lock name (<version>[-<variant>]-cpu.txt or -gpu.txt, with a variant "
                            f"of {folder.path / 'worker.toml'})")
        elif name["variant"] == folder.variant:
            versions.add(name["version"])
    for version in sorted(versions):
        for gpu in (False, True):
            try:
                current_lock_text(folder, version, gpu)
            except LockError as error:
                problems.append(str(error))
    return problems


def assert_locks_current(folder: WorkerFolder) -> None:
    problems = lock_problems(folder)
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("folder", LOCKED_WORKERS, ids=LOCKED_IDS)
def test_every_committed_lock_of_the_worker_is_current(folder):
    assert_locks_current(folder)


def test_the_keras_version_the_tests_and_readme_run_beside_the_pinned_one_is_locked():
    keras = discover_workers()["keras"]
    assert lock_path(keras, "3.14.0").is_file() and lock_path(keras, "3.14.0", gpu=True).is_file()


def test_each_keras_backend_has_its_own_locks_beside_the_tensorflow_ones():
    keras = discover_workers()["keras"]
    for variant, framework in (("jax", "jaxlib"), ("torch", "torch")):
        folder = keras.with_variant(variant)
        assert lock_path(folder) == keras.path / "locks" / f"3.15.1-{variant}-cpu.txt"
        assert lock_path(folder, "3.14.0", gpu=True) == keras.path / "locks" / f"3.14.0-{variant}-gpu.txt"
        pins = locked_pins(lock_path(folder).read_text())
        assert pins["keras"] == {"3.15.1"} and framework in pins
        assert "tensorflow-cpu" not in pins and "tensorflow" not in pins, "Keras on JAX or torch needs no TensorFlow"
        assert relock_command(folder) == f"harness workers lock 'keras[{variant}]@3.15.1'"
    jax_gpu = locked_pins(lock_path(keras.with_variant("jax"), gpu=True).read_text())
    assert jax_gpu["jax"] == {"0.10.2"} and jax_gpu["jax-cuda13-plugin"] == {"0.10.2"}, "JAX's CUDA 13 build"
    # torch's PyPI wheel is the CUDA build on Linux: the CPU and GPU locks hold the same packages.
    torch_cpu, torch_gpu = (lock_path(keras.with_variant("torch"), gpu=gpu).read_text() for gpu in (False, True))
    assert locked_pins(torch_cpu) == locked_pins(torch_gpu)
    pytorch = locked_pins(lock_path(discover_workers()["pytorch"]).read_text())
    shared = set(pytorch) & set(locked_pins(torch_cpu))
    assert {"torch", "nvidia-cudnn-cu13", "triton"} <= shared
    # The PyTorch worker's versions (networkx is pinned to its Python 3.11 one for both Pythons).
    assert [package for package in shared if not locked_pins(torch_cpu)[package] <= pytorch[package]] == []


def test_committed_versions_tell_a_variants_locks_from_the_workers_own():
    keras = discover_workers()["keras"]
    assert worker_locks.committed_versions(keras) == ["3.14.0", "3.15.1"]
    assert worker_locks.committed_versions(keras.with_variant("jax")) == ["3.15.1"]
    targets = [spec.label for spec in worker_locks.lock_targets(None)]
    assert {"keras", "keras@3.14.0", "keras[jax]", "keras[torch]"} <= set(targets)
    assert "keras[jax]@3.15.1" not in targets and "keras@3.15.1" not in targets  # the pinned one once


def copy_of_worker(name: str, tmp_path: Path, package: bool = True) -> WorkerFolder:
    """The worker folder's worker.toml, requirements and locks, copied (its code is not needed, so
    its package is an empty one; `package` False leaves it out, as the image build's first stage does)."""
    source, target = REPO_ROOT / "workers" / name, tmp_path / name
    shutil.copytree(source / "locks", target / "locks")
    for path in [source / "worker.toml", *source.glob("requirements*.txt")]:
        shutil.copy2(path, target / path.name)
    if package:
        (target / f"cxrbench_{name}").mkdir()
        (target / f"cxrbench_{name}" / "__init__.py").touch()
    return WorkerFolder.read(target, require_package=package)


def test_a_pin_changed_without_relocking_fails_the_check_naming_the_lock_and_the_command(tmp_path):
    keras = copy_of_worker("keras", tmp_path)
    assert_locks_current(keras)  # the copy is as good as the original
    keras.requirements.write_text(keras.requirements.read_text().replace("numpy==2.4.6", "numpy==2.4.5"))
    with pytest.raises(AssertionError) as failed:
        assert_locks_current(keras)
    message = str(failed.value)
    assert f"{keras.path}/locks/3.15.1-cpu.txt: stale:" in message and f"{keras.path}/locks/3.14.0-gpu.txt: stale:" in message
    assert "a pin changed since it was made" in message
    assert "run `harness workers lock keras@3.15.1`" in message and "run `harness workers lock keras@3.14.0`" in message


def test_a_new_framework_pin_without_its_lock_fails_the_check_naming_the_missing_file(tmp_path):
    pytorch = copy_of_worker("pytorch", tmp_path)
    pytorch.requirements.write_text(pytorch.requirements.read_text().replace("torch==2.14.1", "torch==2.15.0"))
    with pytest.raises(AssertionError, match=re.escape(f"{pytorch.path}/locks/2.15.0-cpu.txt: missing: worker "
                                                       "'pytorch@2.15.0' has no cpu lock; run `harness workers lock "
                                                       "pytorch@2.15.0`")):
        assert_locks_current(pytorch)


def test_a_lock_edited_by_hand_is_stale_even_with_its_header_intact(tmp_path):
    tensorflow = copy_of_worker("tensorflow", tmp_path)
    path = lock_path(tensorflow, gpu=True)
    path.write_text(path.read_text().replace("\nprotobuf==7.36.2 ", "\nprotobuf==7.36.1 "))
    with pytest.raises(LockError, match=r"2.21.0-gpu.txt: stale: it does not pin protobuf==7.36.2 as the requirements do"):
        current_lock_text(tensorflow, gpu=True)


@pytest.mark.parametrize("folder", LOCKED_WORKERS, ids=LOCKED_IDS)
def test_each_lock_records_its_requirements_hash_and_pins_every_requirement_with_hashes(folder):
    for gpu in (False, True):
        text = lock_path(folder, gpu=gpu).read_text()
        requirements = requirements_text(folder, gpu=gpu)
        assert f"{HASH_LINE}{requirements_sha256(requirements)}\n" in text
        assert f"run `{relock_command(folder)}`" in text
        pins = locked_pins(text)
        for line in requirements.splitlines():
            if "==" in line and not line.startswith("#"):
                package, version = line.split("==")
                assert version.strip() in pins[re.sub(r"[-_.]+", "-", package.split("[")[0]).lower()], line
        # Every package line is followed by its hashes: pip --require-hashes refuses anything else.
        entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 6)[-1].strip())
        assert entries and all("--hash=sha256:" in entry for entry in entries), [e for e in entries if "--hash" not in e]


def test_gpu_lock_of_tensorflow_holds_the_cuda_build_and_not_the_cpu_one():
    tensorflow = discover_workers()["tensorflow"]
    gpu, cpu = (locked_pins(lock_path(tensorflow, gpu=flag).read_text()) for flag in (True, False))
    assert gpu["tensorflow"] == {"2.21.0"} and "tensorflow-cpu" not in gpu
    assert any(package.startswith("nvidia-") for package in gpu)
    assert cpu["tensorflow-cpu"] == {"2.21.0"} and "tensorflow" not in cpu


def test_lock_module_prints_a_current_lock_and_refuses_a_stale_one_as_the_image_build_runs_it(tmp_path):
    keras = copy_of_worker("keras", tmp_path, package=False)  # the build copies worker.toml, requirements, locks

    def run() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-S", "-m", "cxrbench_worker.locks", str(keras.path), "--version", "3.14.0",
                               "--gpu"], env={"PYTHONPATH": str(REPO_ROOT / "workers" / "common")},
                              capture_output=True, text=True, timeout=60)

    printed = run()
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == lock_path(keras, "3.14.0", gpu=True).read_text()
    keras.requirements.write_text(keras.requirements.read_text().replace("grpcio==1.85.1", "grpcio==1.85.0"))
    refused = run()
    assert refused.returncode == 1 and refused.stdout == ""
    assert "3.14.0-gpu.txt: stale:" in refused.stderr and "run `harness workers lock keras@3.14.0`" in refused.stderr


# --- harness workers lock ------------------------------------------------------------------------

@pytest.fixture
def toy_root(tmp_path, monkeypatch):
    """A workers folder with worker "toy" and a folder index of its packages (local_packages.toy_workers)."""
    return toy_workers(tmp_path, monkeypatch)


def test_workers_lock_writes_both_locks_then_keeps_them_and_renews_only_a_stale_one(toy_root, capsys):
    root, wheels = toy_root
    toy = WorkerFolder.read(root / "toy")
    assert lock_workers(root=root) == [(lock_path(toy), "written"), (lock_path(toy, gpu=True), "written")]
    assert "Resolved 3 packages" in capsys.readouterr().err  # uv's own progress line, passed on
    text = lock_path(toy).read_text()
    assert f"toyhelper==2.1 \\\n    --hash=sha256:{sha256_of(wheels / 'toyhelper-2.1-py3-none-any.whl')}" in text
    assert current_lock_text(toy) == text and current_lock_text(toy, gpu=True)

    assert lock_workers(root=root) == [(lock_path(toy), "current"), (lock_path(toy, gpu=True), "current")]
    assert lock_path(toy).read_text() == text

    make_wheel(wheels, "toyhelper", "2.2")  # a newer dependency appears: a renewed lock keeps the old one
    (root / "toy" / "requirements.txt").write_text("toyframework==1.0\ntoypin==1.1\n")
    assert [state for _, state in lock_workers("toy", root=root)] == ["written", "written"]
    renewed = current_lock_text(toy)
    assert "toypin==1.1 " in renewed and "toyhelper==2.1 " in renewed and "toyhelper==2.2" not in renewed
    assert [state for _, state in lock_workers("toy", upgrade=True, root=root)] == ["upgraded", "upgraded"]
    assert "toyhelper==2.2 " in current_lock_text(toy)


def test_a_second_version_is_locked_beside_the_pinned_one_and_renewed_with_it(toy_root):
    root, _ = toy_root
    lock_workers("toy@1.1", root=root)
    toy = WorkerFolder.read(root / "toy")
    assert "toyframework==1.1 " in current_lock_text(toy, "1.1")
    assert sorted(path.name for path in (root / "toy" / "locks").iterdir()) == ["1.1-cpu.txt", "1.1-gpu.txt"]
    states = lock_workers(root=root)  # no selection: the pinned version and every version already locked
    assert [(path.name, state) for path, state in states] == [
        ("1.0-cpu.txt", "written"), ("1.0-gpu.txt", "written"), ("1.1-cpu.txt", "current"), ("1.1-gpu.txt", "current")]


def test_workers_lock_command_prints_each_lock_and_refuses_a_worker_without_requirements(toy_root, monkeypatch, capsys):
    root, _ = toy_root
    bare = root / "bare"
    (bare / "cxrbench_bare").mkdir(parents=True)
    (bare / "cxrbench_bare" / "__init__.py").touch()
    (bare / "worker.toml").write_text('name = "bare"\nbackend = "cxrbench_bare.trainer:Bare"\n')
    real = worker_locks.lock_workers
    monkeypatch.setattr(worker_locks, "lock_workers", lambda selection, upgrade: real(selection, upgrade, root))
    assert cli.main(["workers", "lock"]) == 0  # every worker with requirements: "bare" has none
    locks = root / "toy" / "locks"
    assert capsys.readouterr().out.splitlines() == [f"written  {locks / '1.0-cpu.txt'}", f"written  {locks / '1.0-gpu.txt'}"]
    assert cli.main(["workers", "lock", "toy@1.0"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"current  {locks / '1.0-cpu.txt'}", f"current  {locks / '1.0-gpu.txt'}"]
    assert cli.main(["workers", "lock", "bare"]) == 2
    assert "workers lock: bare installs no requirements (it runs in the harness's interpreter): nothing to lock" in \
        capsys.readouterr().err


def test_workers_lock_says_what_uv_said_when_it_cannot_resolve(toy_root):
    root, _ = toy_root
    (root / "toy" / "requirements.txt").write_text("toyframework==9.9\n")
    with pytest.raises(RuntimeError, match=r"locking toy@9.9 \(cpu\) into .*9.9-cpu.txt: uv could not resolve") as failed:
        lock_workers(root=root)
    assert "toyframework" in str(failed.value)
    assert not (root / "toy" / "locks" / "9.9-cpu.txt").exists()
