"""A worker's lock files: its whole dependency set, resolved once, with every file's SHA-256.

`cxrbench_worker.requirements` says which packages a worker version pins; a lock adds everything
those pull in, each at one version with the hashes of its files, so two installs of one worker
version are the same bytes. Locks are committed beside the worker:

    workers/<name>/locks/<version>-cpu.txt   what the local runtime installs (requirements_text)
    workers/<name>/locks/<version>-gpu.txt   what an image installs (requirements_text(..., gpu=True))
    workers/<name>/locks/<version>-<variant>-cpu.txt, -gpu.txt   the same for a variant (keras[jax])

(`cpu.txt` / `gpu.txt` for a worker that pins no framework version). Each starts with a header that
records the SHA-256 of the requirements text it was resolved from; a lock is current when that
hash is the one of today's requirements and its body pins every package they pin at their version.
`harness workers lock NAME@VERSION` (the harness, with uv) makes and renews them; they are
installed with `pip install --require-hashes --no-deps -r LOCK`.

An image build runs `python -m cxrbench_worker.locks WORKER_DIR --version V [--variant NAME] --gpu`, which prints the
lock after checking it is current, so a pin changed without re-locking stops the build with the
command to run. Standard library only: it runs in a bare Python before anything is installed.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from pathlib import Path

from cxrbench_worker.requirements import (
    normalized_name,
    pinned_version,
    requirement_pin,
    requirements_text,
    worker_version_command,
)
from cxrbench_worker.worker_folder import WorkerFolder

LOCKS_FOLDER = "locks"
HASH_LINE = "# requirements-sha256: "
# A lock's pin: "name==version" at the start of a line, before any marker, extras or continuation.
LOCKED_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)")


class LockError(ValueError):
    """A lock is missing or no longer matches its requirements; the message names the file and the
    command that renews it."""


def lock_kind(gpu: bool) -> str:
    """"gpu" for what an image installs, "cpu" for what the local runtime installs."""
    return "gpu" if gpu else "cpu"


def locked_version(folder: WorkerFolder, version: str | None = None) -> str | None:
    """The framework version a lock is for: the one asked for, else the pinned one (None: no framework)."""
    return version or pinned_version(folder)


def lock_path(folder: WorkerFolder, version: str | None = None, gpu: bool = False) -> Path:
    """Where the lock of `version` (None: the pinned one) of this worker is committed."""
    framework_version = locked_version(folder, version)
    parts = [part for part in (framework_version, folder.variant, lock_kind(gpu)) if part]
    return folder.path / LOCKS_FOLDER / f"{'-'.join(parts)}.txt"


def lock_label(folder: WorkerFolder, version: str | None = None) -> str:
    """How `harness workers lock` names this lock's worker: keras@3.15.1, keras[jax]@3.15.1 (or keras
    without a framework)."""
    framework_version = locked_version(folder, version)
    return f"{folder.label}@{framework_version}" if framework_version else folder.label


def relock_command(folder: WorkerFolder, version: str | None = None) -> str:
    """The command that renews this worker version's locks (a variant's label quoted for the shell)."""
    return f"harness workers lock {shlex.quote(lock_label(folder, version))}"


def requirements_sha256(requirements: str) -> str:
    """The SHA-256 a lock's header records: of the requirements text, as UTF-8."""
    return hashlib.sha256(requirements.encode()).hexdigest()


def header(folder: WorkerFolder, version: str | None, gpu: bool, requirements: str, resolved_by: str) -> str:
    """The comment lines a lock starts with; `resolved_by` is the resolver's command line."""
    framework_version = locked_version(folder, version)
    what = (f"{folder.framework_package} {framework_version}" if framework_version else "no framework pin")
    used = "a GPU image (compose.yaml, workers/Dockerfile)" if gpu else "the local runtime's environment"
    requirements_command = (f"python -m cxrbench_worker.requirements workers/{folder.path.name}"
                            + (f" --version {framework_version}" if framework_version else "")
                            + (f" --variant {folder.variant}" if folder.variant else "")
                            + (" --gpu" if gpu else ""))
    return (f"# Lock of worker '{folder.label}' ({what}), {lock_kind(gpu)}: what {used} installs, with\n"
            f"# `pip install --require-hashes --no-deps -r` this file. Generated: do not edit; after changing\n"
            f"# a pin, run `{relock_command(folder, version)}`.\n"
            f"# requirements: `{requirements_command}`\n"
            f"{HASH_LINE}{requirements_sha256(requirements)}\n"
            f"# resolved by: {resolved_by}\n")


def recorded_requirements_sha256(lock_text: str) -> str | None:
    """The requirements hash a lock's header records, or None when it has no such line."""
    for line in lock_text.splitlines():
        if line.startswith(HASH_LINE):
            return line[len(HASH_LINE):].strip()
    return None


def locked_pins(lock_text: str) -> dict[str, set[str]]:
    """{normalized package: versions} the lock pins (a package may have one version per marker)."""
    pins: dict[str, set[str]] = {}
    for line in lock_text.splitlines():
        match = LOCKED_PIN.match(line)
        if match:
            pins.setdefault(normalized_name(match["name"]), set()).add(match["version"])
    return pins


def required_pins(requirements: str) -> dict[str, str]:
    """{normalized package: version} of the requirements' `name==version` lines (extras dropped)."""
    return dict(pin for pin in map(requirement_pin, requirements.splitlines()) if pin is not None)


def lock_problem(folder: WorkerFolder, version: str | None, gpu: bool, lock_text: str) -> str | None:
    """Why `lock_text` is not the current lock of this worker version (None: it is)."""
    requirements = requirements_text(folder, version, gpu)
    recorded = recorded_requirements_sha256(lock_text)
    if recorded is None:
        return f"it has no '{HASH_LINE.strip()}' header line (not made by `harness workers lock`?)"
    if recorded != requirements_sha256(requirements):
        return ("it was resolved from other requirements than the worker's requirements give now "
                "(a pin changed since it was made)")
    locked = locked_pins(lock_text)
    for package, pinned in required_pins(requirements).items():
        if pinned not in locked.get(package, set()):
            return f"it does not pin {package}=={pinned} as the requirements do (edited by hand?)"
    return None


def current_lock_text(folder: WorkerFolder, version: str | None = None, gpu: bool = False) -> str:
    """The committed lock of this worker version, checked to be current.

    Raises LockError naming the file and the `harness workers lock` command when the lock is
    missing or stale; ValueError (from the requirements rule) when the version cannot be applied.
    """
    path = lock_path(folder, version, gpu)
    if not path.is_file():
        raise LockError(f"{path}: missing: worker '{lock_label(folder, version)}' has no {lock_kind(gpu)} lock; "
                        f"run `{relock_command(folder, version)}` (and commit the file)")
    lock_text = path.read_text()
    problem = lock_problem(folder, version, gpu, lock_text)
    if problem is not None:
        raise LockError(f"{path}: stale: {problem}; run `{relock_command(folder, version)}` (and commit the file)")
    return lock_text


def main(argv: list[str] | None = None) -> None:
    """`python -m cxrbench_worker.locks WORKER_DIR [--version V] [--variant NAME] [--gpu]`: print the current lock."""
    worker_version_command("python -m cxrbench_worker.locks", __doc__, "the lock a GPU image installs",
                           current_lock_text, argv)


if __name__ == "__main__":
    main()
