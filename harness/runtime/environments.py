"""Worker environments for the local runtime: one virtual environment per worker version and lock.

An environment is created on first use from the worker version's CPU lock (`cxrbench_worker.locks`:
the committed `workers/<name>/locks/<version>-cpu.txt`, or for a version nobody locked, one resolved
with uv into `<cache>/locks/`), installed with `pip install --require-hashes --no-deps`, so every
package, the unpinned dependencies of the pins included, is the locked version and file. It is
cached under `<cache>/envs/<worker>-<key>` (`keras-jax-<key>` for the variant keras[jax]), the key
hashing the lock's text, the Python version and the platform: re-lock or ask another version and a
new environment is made; nothing ever reuses a stale one. A committed lock that no longer matches its
requirements is an error (run `harness workers lock`). A `.complete` marker is written last, so an
interrupted creation is detected and redone.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import platform
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxrbench_worker.worker_folder import WorkerFolder
from cxrbench_worker.worker_labels import safe_label, worker_label
from harness.progress import progress_bar
from harness.runtime.worker_locks import Lock, environment_lock

COMPLETE_MARKER = ".complete"
LOCK_FILE = "requirements.lock"  # the lock that was installed, as given to pip
FREEZE_FILE = "pip-freeze.txt"  # what pip then lists as installed (pip and setuptools included)
INSTALL_LOG = "install.log"


@dataclass(frozen=True)
class WorkerEnvironment:
    """A ready interpreter for one worker, and the hash of exactly what is installed in it."""

    python: Path
    key: str  # "host" for workers that run in the harness's own interpreter
    # Provenance: SHA-256 of the lock file installed (of `pip freeze` for the harness's interpreter).
    lock_sha256: str


def environment_key(lock_text: str) -> str:
    """Digest of the lock's text, the Python version and the platform."""
    digest = hashlib.sha256(lock_text.encode())
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


@functools.cache
def _host_freeze_sha256() -> str:
    """SHA-256 of `pip freeze` in the harness's own interpreter: once per process (a pip subprocess
    costs about 0.4 s, and what is installed here does not change while the harness runs)."""
    return hashlib.sha256(_freeze(Path(sys.executable)).encode()).hexdigest()


def _tick(bar: Any, done: threading.Event) -> None:
    while not done.wait(1.0):
        bar.refresh()


def install_command(python: Path, lock: Path) -> list[str]:
    """pip, installing exactly the lock: every file's hash checked (`--require-hashes`), nothing
    beyond it (`--no-deps`; the lock already holds every dependency, and `pip check` confirms it).

    `--no-compile`: pip would byte-compile every module of every package (torch's: 65 s instead of
    39 s on 2 cores); Python compiles the ones a worker imports on first import, once, and keeps them."""
    return [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
            "--require-hashes", "--no-deps", "--no-compile", "-r", str(lock)]


def _install(target: Path, lock: Lock, worker: str) -> None:
    """Create the venv and pip-install the lock, showing progress; raises with the log's tail."""
    shutil.rmtree(target, ignore_errors=True)
    _run([sys.executable, "-m", "venv", str(target)], f"creating a virtual environment in {target}")
    installed_lock = target / LOCK_FILE
    installed_lock.write_text(lock.text)
    python = target / "bin" / "python"
    log_path = target / INSTALL_LOG
    command = install_command(python, installed_lock)
    with open(log_path, "w") as log, progress_bar(desc=f"environment {worker}", unit=" step", leave=True) as bar:
        log.write(f"# from {lock.path}\n$ {' '.join(command)}\n")
        log.flush()
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
            log.flush()
            tail = "".join(log_path.read_text().splitlines(keepends=True)[-15:])
            raise RuntimeError(
                f"creating the environment of worker '{worker}' from {lock.path} failed "
                f"(pip exit {process.returncode}); full log: {log_path}\n{tail}"
            )
    # --no-deps trusts the lock to be complete for this Python and platform; pip check proves it.
    checked = subprocess.run([str(python), "-m", "pip", "check"], capture_output=True, text=True)
    if checked.returncode != 0:
        raise RuntimeError(f"{lock.path}: installed, but `pip check` finds it incomplete for this Python and platform; "
                           f"renew it with `harness workers lock --upgrade` ({worker}). pip said:\n"
                           f"{(checked.stdout + checked.stderr).strip()[-2000:]}")
    (target / FREEZE_FILE).write_text(_freeze(python))
    (target / COMPLETE_MARKER).write_text("ok\n")


def environment_stem(folder: WorkerFolder) -> str:
    """The start of its environments' folder names: "keras", "keras-jax" for the variant keras[jax]."""
    return safe_label(folder.label)


def environment_path(folder: WorkerFolder, cache: Path, version: str | None = None,
                     gpu: bool = False) -> Path | None:
    """Where the environment of `folder` (at framework `version`, None: as pinned; its GPU lock with
    `gpu`) is cached; None when its lock is yet to be resolved (a version with no committed lock, not
    used before).

    Raises LockError (a ValueError) when the committed lock is stale.
    """
    lock = environment_lock(folder, version, cache / "locks", resolve_missing=False, gpu=gpu)
    return None if lock is None else cache / "envs" / f"{environment_stem(folder)}-{environment_key(lock.text)}"


def lock_sha256(folder: WorkerFolder, cache: Path, version: str | None = None, gpu: bool = False) -> str:
    """The digest of the lock the worker's environment is (or would be) built from, without building
    it: what two machines compare to know they would run the same packages."""
    if folder.requirements is None:
        return _host_freeze_sha256()
    lock = environment_lock(folder, version, cache / "locks", gpu=gpu)
    assert lock is not None  # resolved when missing
    return hashlib.sha256(lock.text.encode()).hexdigest()


def ensure_environment(folder: WorkerFolder, cache: Path, version: str | None = None,
                       gpu: bool = False) -> WorkerEnvironment:
    """Return the worker's environment for framework `version` (None: as pinned), creating it first
    from its lock if needed (about a minute for torch; a version with no committed lock is resolved
    with uv first, a few seconds). `gpu` installs the GPU lock (TensorFlow's CUDA build, for one):
    its text differs, so it is cached under its own key beside the CPU one."""
    if folder.requirements is None:
        return WorkerEnvironment(Path(sys.executable), "host", _host_freeze_sha256())
    lock = environment_lock(folder, version, cache / "locks", gpu=gpu)
    assert lock is not None  # resolved when missing
    key = environment_key(lock.text)
    target = cache / "envs" / f"{environment_stem(folder)}-{key}"
    label = worker_label(folder.name, folder.variant, version)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as flock:
        fcntl.flock(flock, fcntl.LOCK_EX)  # two harnesses never build the same environment at once
        if not (target / COMPLETE_MARKER).is_file():
            # One write: two environments may be made at once (LocalRuntime.prepare), each line whole.
            sys.stderr.write(f"Creating the environment of worker '{label}' in {target} from {lock.path} "
                             "(first use)...\n")
            _install(target, lock, label)
    return WorkerEnvironment(target / "bin" / "python", key, hashlib.sha256(lock.text.encode()).hexdigest())
