"""Worker environments for the local runtime: one virtual environment per worker and requirements.

An environment is created on first use from the worker's pinned requirements (for a version asked
with `keras@3.14.0`, the requirements `cxrbench_worker.requirements` derives for it) and cached
under `<cache>/envs/<worker>-<key>`, the key hashing the requirements text, the Python version and
the platform: edit a pin or ask another version and a new environment is made; nothing ever reuses
a stale one. A `.complete` marker is written last, so an interrupted creation is detected and redone.
"""

from __future__ import annotations

import fcntl
import hashlib
import platform
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.progress import progress_bar

from cxrbench_worker.requirements import requirements_text
from cxrbench_worker.worker_folder import WorkerFolder

COMPLETE_MARKER = ".complete"
LOCK_FILE = "requirements.lock"
REQUIREMENTS_FILE = "requirements.txt"  # what was installed, as given to pip


@dataclass(frozen=True)
class WorkerEnvironment:
    """A ready interpreter for one worker, and the hash of exactly what is installed in it."""

    python: Path
    key: str  # "host" for workers that run in the harness's own interpreter
    lock_sha256: str  # SHA-256 of `pip freeze` in the environment (provenance)


def environment_key(requirements: str) -> str:
    """Digest of the requirements text, the Python version and the platform."""
    digest = hashlib.sha256(requirements.encode())
    digest.update(f"{platform.python_version()} {sys.platform} {platform.machine()}".encode())
    return digest.hexdigest()[:16]


def _run(command: list[str], what: str) -> str:
    """Run a set-up command; a failure becomes a RuntimeError that says what was being done."""
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}")
    return result.stdout


def _freeze(python: Path) -> str:
    return _run([str(python), "-m", "pip", "freeze", "--all"], f"listing the packages of {python}")


def _tick(bar: Any, done: threading.Event) -> None:
    while not done.wait(1.0):
        bar.refresh()


def _install(target: Path, requirements_source: str, worker: str, source: str) -> None:
    """Create the venv and pip-install the requirements, showing progress; raises with the log's tail."""
    shutil.rmtree(target, ignore_errors=True)
    _run([sys.executable, "-m", "venv", str(target)], f"creating a virtual environment in {target}")
    requirements = target / REQUIREMENTS_FILE
    requirements.write_text(requirements_source)
    python = target / "bin" / "python"
    log_path = target / "install.log"
    command = [
        str(python), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
        "-r", str(requirements),
    ]
    with open(log_path, "w") as log, progress_bar(desc=f"environment {worker}", unit=" step", leave=True) as bar:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert process.stdout is not None
        ticking = threading.Event()
        # pip is silent for a minute while it unpacks torch: keep the elapsed time moving.
        threading.Thread(target=_tick, args=(bar, ticking), daemon=True).start()
        try:
            for line in process.stdout:
                log.write(line)
                if line.startswith(("Collecting", "Installing", "Successfully", "Processing", "Building")):
                    bar.set_postfix_str(line.strip()[:60], refresh=False)
                    bar.update()
            process.wait()
        finally:
            ticking.set()
            if process.poll() is None:  # interrupted: pip must not go on writing into the folder
                process.kill()
                process.wait()
        if process.returncode != 0:
            tail = "".join(log_path.read_text().splitlines(keepends=True)[-15:])
            raise RuntimeError(
                f"creating the environment of worker '{worker}' from {source} failed "
                f"(pip exit {process.returncode}); full log: {log_path}\n{tail}"
            )
    (target / LOCK_FILE).write_text(_freeze(python))
    (target / COMPLETE_MARKER).write_text("ok\n")


def environment_path(folder: WorkerFolder, cache: Path, version: str | None = None) -> Path:
    """Where the environment of `folder` (at framework `version`, None: as pinned) is cached."""
    return cache / "envs" / f"{folder.name}-{environment_key(requirements_text(folder, version))}"


def ensure_environment(folder: WorkerFolder, cache: Path, version: str | None = None) -> WorkerEnvironment:
    """Return the worker's environment for framework `version` (None: as pinned), creating it first
    if needed (about a minute for torch)."""
    if folder.requirements is None:
        return WorkerEnvironment(Path(sys.executable), "host", hashlib.sha256(_freeze(Path(sys.executable)).encode()).hexdigest())
    target = environment_path(folder, cache, version)
    key = target.name.rsplit("-", 1)[1]
    label = f"{folder.name}@{version}" if version else folder.name
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two harnesses never build the same environment at once
        if not (target / COMPLETE_MARKER).is_file():
            print(f"Creating the environment of worker '{label}' in {target} (first use)...", file=sys.stderr)
            source = f"{folder.requirements}" + (f" with {folder.framework_package}=={version}" if version else "")
            _install(target, requirements_text(folder, version), label, source)
    lock_text = (target / LOCK_FILE).read_text()
    return WorkerEnvironment(target / "bin" / "python", key, hashlib.sha256(lock_text.encode()).hexdigest())
