"""Resolving worker locks with uv: `harness workers lock`, and versions that have no committed lock.

What a lock is, where it lives and when it is current is `cxrbench_worker.locks` (standard library,
shared with the image build). This module makes them: `uv pip compile --generate-hashes --universal`
turns a worker version's requirements text into every package it pulls in, one version each, with
the SHA-256 of each file (universal: one lock holds every platform's and Python's packages behind
markers, so the lock made here serves Python 3.11 hosts and the images' Python 3.12 alike).

uv resolves and pip installs: uv is a pinned harness dependency (`uv==0.13.9`), found beside the
harness's interpreter, and is needed only to make a lock, never to install one.

A lock is resolved with a previous lock as uv's preferences (its `-o` file): the stale lock it
replaces, else the pinned version's lock of the same kind (CPU or GPU), else the same version's CPU lock.
So renewing after one pin moved keeps every other package where it was, and a second version of a
framework differs from the first only where its own requirements force it to.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from cxrbench_worker.locks import (
    LOCKS_FOLDER,
    current_lock_text,
    header,
    lock_kind,
    lock_label,
    lock_path,
    lock_problem,
    locked_version,
    relock_command,
    requirements_sha256,
)
from cxrbench_worker.requirements import requirements_text
from cxrbench_worker.worker_folder import WorkerFolder
from cxrbench_worker.worker_labels import safe_label
from harness.runtime.registry import WORKERS_ROOT, WorkerSpec, discover_workers, resolve_workers

# Universal resolution for the oldest Python the harness runs on (pyproject's requires-python); the
# lock's markers cover newer ones (the images' Ubuntu 24.04 has 3.12).
LOCK_PYTHON = "3.11"
UV_COMPILE = ("pip", "compile", "--generate-hashes", "--universal", "--python-version", LOCK_PYTHON,
              "--no-header", "--color", "never")


@dataclass(frozen=True)
class Lock:
    """A lock file and its text."""

    path: Path
    text: str


def uv_binary() -> str:
    """The uv executable of the harness's environment (the `uv` package), else one on PATH."""
    try:
        import uv  # the PyPI package ships the binary and this finder
        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found is None:
            raise RuntimeError("uv is missing: it is a harness dependency (uv==0.13.9 in pyproject.toml); reinstall "
                               "the harness (`pip install -e .`, or delete .venv and run bin/harness again)") from None
        return found


def uv_version(uv: str) -> str:
    """`uv --version`'s answer, e.g. "uv 0.13.9", for the lock's header."""
    return subprocess.run([uv, "--version"], capture_output=True, text=True, check=True).stdout.strip()


def resolve(requirements: str, destination: Path, lock_header: str, what: str, seed: Path | None = None,
            upgrade: bool = False) -> Lock:
    """Resolve `requirements` with uv into `destination` (header first), showing uv's progress on stderr.

    `seed`: a previous lock whose versions uv prefers (ignored with `upgrade`). The file is replaced
    atomically, so a failed or interrupted resolution leaves the old one. RuntimeError with uv's
    last lines when it fails.
    """
    uv = uv_binary()
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lock-", dir=destination.parent) as scratch:
        # uv's "# via -r requirements.txt" annotations name this file, relative to uv's working folder.
        (Path(scratch) / "requirements.txt").write_text(requirements)
        output = Path(scratch) / "lock.txt"
        if seed is not None and seed.is_file() and not upgrade:
            shutil.copyfile(seed, output)  # uv keeps the versions of an existing output file where it can
        command = [uv, *UV_COMPILE, "requirements.txt", "-o", "lock.txt", *(["--upgrade"] if upgrade else [])]
        print(f"{what}: uv {' '.join(command[1:])}", file=sys.stderr, flush=True)
        # uv also prints the lock on stdout (dropped); its messages ("Resolved 42 packages in 1.2s") are on stderr.
        process = subprocess.Popen(command, cwd=scratch, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        assert process.stderr is not None
        tail: deque[str] = deque(maxlen=15)
        for line in process.stderr:
            tail.append(line)
            print(f"  {line.rstrip()}", file=sys.stderr, flush=True)
        if process.wait() != 0:
            raise RuntimeError(f"{what}: uv could not resolve the requirements (exit {process.returncode}); it needs "
                               f"PyPI (or the index of UV_INDEX_URL / UV_FIND_LINKS). uv said:\n{''.join(tail)}")
        text = lock_header + output.read_text()
        written = Path(scratch) / "final.txt"
        written.write_text(text)
        os.replace(written, destination)
    return Lock(destination, text)


def resolved_by(upgrade: bool = False) -> str:
    """The line a lock's header records: the resolver, its version and its arguments."""
    uv = uv_binary()
    arguments = " ".join([*UV_COMPILE, "requirements.txt", *(["--upgrade"] if upgrade else [])])
    return f"{uv_version(uv)}: uv {arguments}"


def _seed(folder: WorkerFolder, version: str | None, gpu: bool, destination: Path) -> Path | None:
    """The lock whose versions the new one should keep where it can (see the module doc)."""
    for candidate in (destination, lock_path(folder, None, gpu), lock_path(folder, version, False)):
        if candidate.is_file():
            return candidate
    return None


def lock_worker(folder: WorkerFolder, version: str | None = None, gpu: bool = False, upgrade: bool = False) -> Lock:
    """Resolve and write the committed lock of one worker version and variant."""
    requirements = requirements_text(folder, version, gpu)
    destination = lock_path(folder, version, gpu)
    what = f"locking {lock_label(folder, version)} ({lock_kind(gpu)}) into {destination}"
    return resolve(requirements, destination, header(folder, version, gpu, requirements, resolved_by(upgrade)), what,
                   _seed(folder, version, gpu, destination), upgrade)


def committed_versions(folder: WorkerFolder) -> list[str]:
    """The framework versions with a lock under the worker's locks/ folder (`<version>-cpu.txt` /
    `-gpu.txt`; for a variant, `<version>-<variant>-cpu.txt` / `-gpu.txt`)."""
    versions = set()
    for path in (folder.path / LOCKS_FOLDER).glob("*-[cg]pu.txt"):
        version, _, rest = path.name.removesuffix(".txt").rpartition("-")  # rest: "cpu" or "gpu"
        head, _, last = version.rpartition("-")
        if head and last in folder.variant_names:  # "3.15.1-jax": the jax variant's lock
            if last == folder.variant:
                versions.add(head)
        elif folder.variant is None:
            versions.add(version)
    return sorted(versions)


def lock_targets(selection: str | None, root: Path = WORKERS_ROOT) -> list[WorkerSpec]:
    """The worker versions `harness workers lock [SELECTION]` renews.

    None: every listed worker and each of its variants at its pinned version, and every version that
    already has a lock (so a changed shared pin renews them all). Otherwise `NAME[VARIANT][@VERSION],...`
    as `--workers` reads it. Workers without requirements (the null worker) have nothing to lock and
    are left out.
    """
    if selection:
        chosen = resolve_workers(selection, root)
        bare = [spec.label for spec in chosen if spec.folder.requirements is None]
        if bare:
            raise ValueError(f"workers lock: {', '.join(bare)} installs no requirements (it runs in the harness's "
                             "interpreter): nothing to lock")
        return chosen
    targets: list[WorkerSpec] = []
    for worker in discover_workers(root).values():
        if worker.requirements is None:
            continue
        for folder in (worker, *(worker.with_variant(name) for name in worker.variant_names)):
            pinned = locked_version(folder)
            if folder.listed:
                targets.append(WorkerSpec(folder))
            targets.extend(WorkerSpec(folder, version) for version in committed_versions(folder) if version != pinned)
    return targets


def lock_workers(
    selection: str | None = None, upgrade: bool = False, root: Path = WORKERS_ROOT
) -> list[tuple[Path, str]]:
    """Renew the CPU and GPU locks of the selected worker versions that are missing or stale (all of
    them with `upgrade`, which also lets uv move every package to its newest release).

    Returns (lock path, what happened: "current", "written" or "upgraded") for each lock.
    """
    done: list[tuple[Path, str]] = []
    for spec in lock_targets(selection, root):
        for gpu in (False, True):  # CPU first: the GPU lock then keeps the CPU lock's shared versions
            path = lock_path(spec.folder, spec.version, gpu)
            if (not upgrade and path.is_file()
                    and lock_problem(spec.folder, spec.version, gpu, path.read_text()) is None):
                done.append((path, "current"))
                continue
            lock_worker(spec.folder, spec.version, gpu, upgrade)
            done.append((path, "upgraded" if upgrade else "written"))
    return done


def cached_lock_path(folder: WorkerFolder, version: str | None, cache: Path, gpu: bool = False) -> Path:
    """Where a version's lock resolved on first use is kept: keyed by the requirements' hash."""
    requirements = requirements_text(folder, version, gpu)
    name = (f"{locked_version(folder, version) or 'unversioned'}-{lock_kind(gpu)}-"
            f"{requirements_sha256(requirements)[:16]}.txt")
    return cache / safe_label(folder.label) / name


def environment_lock(
    folder: WorkerFolder, version: str | None, cache: Path, resolve_missing: bool = True, gpu: bool = False
) -> Lock | None:
    """The lock the local runtime installs for this worker version: the CPU lock, or with `gpu` the
    GPU lock (TensorFlow's CUDA build instead of tensorflow-cpu; what the GPU images install).

    The committed lock when there is one (LockError, naming the file and the command, when it is
    stale: a pin changed without re-locking); else one resolved earlier into `cache`; else, with
    `resolve_missing`, one resolved now into `cache` (said on stderr); else None.
    """
    committed = lock_path(folder, version, gpu)
    if committed.is_file():
        return Lock(committed, current_lock_text(folder, version, gpu))
    cached = cached_lock_path(folder, version, cache, gpu)
    if cached.is_file():
        return Lock(cached, cached.read_text())
    if not resolve_missing:
        return None
    print(f"worker '{lock_label(folder, version)}' has no committed {'GPU ' if gpu else ''}lock ({committed}): "
          f"resolving one with uv into {cached}; `{relock_command(folder, version)}` would commit it",
          file=sys.stderr, flush=True)
    requirements = requirements_text(folder, version, gpu)
    return resolve(requirements, cached, header(folder, version, gpu, requirements, resolved_by()),
                   f"locking {lock_label(folder, version)} ({lock_kind(gpu)})", _seed(folder, version, gpu, cached))
