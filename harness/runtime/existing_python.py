"""`--python NAME=PATH`: a worker run by an interpreter the user already has; nothing is built.

A conda environment, a cluster's module or a vendor's image often has the frameworks installed and
no way to reach a package index. The interpreter is asked once, in a subprocess, for its Python
version and the installed versions of what the worker needs: the contract's packages and the worker's
direct pins (its requirements file's first block of pins; the blocks after a comment list the
dependencies of those, which pip brings along). Anything missing is refused in one message that lists
it all. The versions need not match the pins: the interpreter is used as it is, and the versions the
running worker reports are the ones the run records (with a digest of every installed distribution,
the counterpart of a lock's hash).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cxrbench_worker.requirements import normalized_name, requirement_pin
from cxrbench_worker.worker_folder import WorkerFolder

# What every worker imports to speak the contract (workers/common), whatever its framework.
CONTRACT_PACKAGES = ("grpcio", "grpcio-health-checking", "protobuf", "numpy", "safetensors")
MINIMUM_PYTHON = (3, 10)
PROBE_TIMEOUT_SECONDS = 120.0

# Run in the user's interpreter: standard library only, Python 3.8+ syntax, so even too old an
# interpreter answers (and is refused by name) instead of failing with a syntax error.
_PROBE = """
import importlib.metadata as metadata, json, platform, sys
wanted = json.loads(sys.argv[1])
found = {}
for name, alternatives in wanted.items():
    for candidate in alternatives:
        try:
            found[name] = [candidate, metadata.version(candidate)]
            break
        except metadata.PackageNotFoundError:
            pass
everything = sorted("%s==%s" % (d.metadata["Name"], d.version) for d in metadata.distributions())
print(json.dumps({"python": platform.python_version(), "found": found, "installed": everything}))
"""


@dataclass(frozen=True)
class ExistingInterpreter:
    """An interpreter that has what a worker needs, and what it has."""

    python: Path
    python_version: str
    packages: dict[str, str]  # each needed package -> "distribution version" as installed
    installed_sha256: str  # SHA-256 of every installed distribution, "name==version" sorted


def direct_packages(folder: WorkerFolder) -> list[str]:
    """The worker's own pins: its requirements file's lines up to the first comment after a pin."""
    if folder.requirements is None:
        return []
    names: list[str] = []
    for line in folder.requirements.read_text().splitlines():
        if line.lstrip().startswith("#") and names:
            break
        pin = requirement_pin(line)
        if pin is not None:
            names.append(pin[0])
    return names


def _alternatives(package: str) -> list[str]:
    """Distribution names that provide `package`: tensorflow-cpu is also `tensorflow` (the CUDA build)."""
    names = [package]
    for suffix in ("-cpu", "-gpu"):
        if package.endswith(suffix):
            names.append(package.removesuffix(suffix))
    return names


def inspect_interpreter(label: str, folder: WorkerFolder, python: Path,
                        framework_version: str | None = None) -> ExistingInterpreter:
    """Ask `python` whether it can run worker `label`; ValueError naming every missing package.

    `framework_version`, when the run asked for one (`keras@3.14.0`), must be the one installed.
    """
    needed = list(dict.fromkeys([*map(normalized_name, CONTRACT_PACKAGES), *direct_packages(folder)]))
    try:
        result = subprocess.run([str(python), "-c", _PROBE, json.dumps({n: _alternatives(n) for n in needed})],
                                capture_output=True, text=True, timeout=PROBE_TIMEOUT_SECONDS)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ValueError(f"--python {label}={python}: could not run it ({error})") from None
    if result.returncode != 0:
        raise ValueError(f"--python {label}={python}: it failed to list its packages "
                         f"(exit {result.returncode}): {result.stderr.strip()[-500:]}")
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    version = answer["python"]
    if tuple(int(part) for part in version.split(".")[:2]) < MINIMUM_PYTHON:
        raise ValueError(f"--python {label}={python}: Python {version} is too old; the worker needs "
                         f"{'.'.join(map(str, MINIMUM_PYTHON))} or newer")
    missing = [name for name in needed if name not in answer["found"]]
    if missing:
        raise ValueError(
            f"--python {label}={python}: this interpreter (Python {version}) lacks {', '.join(missing)}, which "
            f"worker '{folder.label}' needs (it has: "
            + (", ".join(f"{d} {v}" for d, v in answer["found"].values()) or "none of them")
            + f"). Install them there (`{python} -m pip install {' '.join(missing)}`), or leave out "
            f"--python {label}=... to let the harness build the worker's own environment")
    packages = {name: f"{dist} {installed}" for name, (dist, installed) in answer["found"].items()}
    if framework_version and folder.framework_package:
        name = normalized_name(folder.framework_package)
        installed = answer["found"][name][1] if name in answer["found"] else None
        if installed is not None and installed.split("+", 1)[0] != framework_version.split("+", 1)[0]:
            raise ValueError(f"--python {label}={python}: it has {answer['found'][name][0]} {installed}, not the "
                             f"{framework_version} that --workers {label} asks for")
    installed_text = "\n".join(answer["installed"]) + "\n"
    return ExistingInterpreter(python, version, packages, hashlib.sha256(installed_text.encode()).hexdigest())
