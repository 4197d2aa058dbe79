"""A worker's pinned requirements for any framework version: the one rule both runtimes apply.

The local runtime builds a virtual environment from this text and a Docker image build runs
`python -m cxrbench_worker.requirements WORKER_DIR --version V [--gpu]`, so a version asked for with
`--workers keras@3.14.0` means the same packages in both. The rule:

1. `requirements-<version>.txt` in the worker folder, when it exists, is used as written (for a
   framework whose companions move in step, e.g. torch and torchvision);
2. otherwise `requirements.txt` with the framework's own pin replaced by `<package>==<version>`;
3. for a GPU image, the packages named in worker.toml's `[gpu] packages` table are renamed
   (`tensorflow-cpu` becomes `tensorflow[and-cuda]` at the same version).

Standard library only: it runs in a bare Python before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from cxrbench_worker.worker_folder import WorkerFolder

# A version the way pip's "==" accepts it: digits, letters, dots, "+", "-", "!" (e.g. 2.14.1+cu128).
VERSION_PATTERN = re.compile(r"^[0-9][0-9A-Za-z.+!_-]*$")


def _normalized(package: str) -> str:
    """A package name as pip compares them: lower case, "_" as "-"."""
    return package.strip().lower().replace("_", "-")


def _package_of(line: str) -> str | None:
    """The package name a requirement line pins (normalized, extras dropped), or None."""
    requirement = line.split("#", 1)[0].strip()
    if "==" not in requirement:
        return None
    return _normalized(requirement.split("==", 1)[0].split("[", 1)[0])


def _pin_of(text: str, package: str) -> str | None:
    for line in text.splitlines():
        if _package_of(line) == _normalized(package):
            return line.split("#", 1)[0].split("==", 1)[1].strip()
    return None


def pinned_version(folder: WorkerFolder) -> str | None:
    """The version the worker's requirements file pins for its framework package, if any."""
    if folder.requirements is None or folder.framework_package is None:
        return None
    return _pin_of(folder.requirements.read_text(), folder.framework_package)


def requirements_text(folder: WorkerFolder, version: str | None = None, gpu: bool = False) -> str:
    """The requirements for `version` of the worker's framework (None: as pinned); see the module doc.

    Raises ValueError naming the file when the version cannot be applied.
    """
    if folder.requirements is None:
        raise ValueError(f"{folder.path / 'worker.toml'}: worker '{folder.name}' has no requirements file, "
                         "so it has no framework version to choose")
    text = folder.requirements.read_text()
    if version is not None:
        if not VERSION_PATTERN.match(version):
            raise ValueError(f"worker '{folder.name}': {version!r} is not a version (e.g. 3.14.0)")
        if folder.framework_package is None:
            raise ValueError(f"{folder.path / 'worker.toml'}: no 'framework_package', so '{folder.name}@{version}' "
                             "cannot say which pin to change")
        specific = folder.path / f"requirements-{version}.txt"
        if specific.is_file():
            text = specific.read_text()
            if _pin_of(text, folder.framework_package) != version:
                raise ValueError(f"{specific}: does not pin {folder.framework_package}=={version}")
        elif _pin_of(text, folder.framework_package) is None:
            raise ValueError(f"{folder.requirements}: no '{folder.framework_package}==' line to change to {version}")
        else:
            text = "".join(_repinned(line, folder.framework_package, version)
                           for line in text.splitlines(keepends=True))
    if gpu:
        for cpu_package, gpu_package in folder.gpu_packages.items():
            text = "".join(_renamed(line, cpu_package, gpu_package) for line in text.splitlines(keepends=True))
    return text


def _repinned(line: str, package: str, version: str) -> str:
    if _package_of(line) != _normalized(package):
        return line
    name = line.split("==", 1)[0]
    return f"{name}=={version}\n"


def _renamed(line: str, package: str, replacement: str) -> str:
    if _package_of(line) != _normalized(package):
        return line
    return f"{replacement}=={line.split('#', 1)[0].split('==', 1)[1].strip()}\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cxrbench_worker.requirements", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("worker_dir", type=Path, help="the worker folder, e.g. workers/keras")
    parser.add_argument("--version", default=None, help="framework version (default: the pinned one)")
    parser.add_argument("--gpu", action="store_true", help="rename the packages of worker.toml's [gpu] table")
    args = parser.parse_args(argv)
    try:
        # An image's requirements stage copies worker.toml and the requirements alone, not the code.
        folder = WorkerFolder.read(args.worker_dir, require_package=False)
        sys.stdout.write(requirements_text(folder, args.version or None, args.gpu))
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
