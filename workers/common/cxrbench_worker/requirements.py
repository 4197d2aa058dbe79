"""A worker's pinned requirements for any framework version: the one rule both runtimes apply.

The local runtime builds a virtual environment from this text and a Docker image build runs
`python -m cxrbench_worker.requirements WORKER_DIR --version V [--variant NAME] [--gpu]`, so a version asked for with
`--workers keras@3.14.0` means the same packages in both. The rule:

1. `requirements-<version>.txt` in the worker folder, when it exists, is used as written (for a
   framework whose companions move in step, e.g. torch and torchvision); for a variant whose
   requirements are `requirements-jax.txt`, `requirements-jax-<version>.txt`;
2. otherwise `requirements.txt` (a variant's own file) with the framework's own pin replaced by
   `<package>==<version>`;
3. for a GPU image, the packages named in worker.toml's `[gpu] packages` table are renamed
   (`tensorflow-cpu` becomes `tensorflow[and-cuda]` at the same version).

Standard library only: it runs in a bare Python before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from cxrbench_worker.worker_folder import WorkerFolder

# A version the way pip's "==" accepts it: digits, letters, dots, "+", "-", "!" (e.g. 2.14.1+cu128).
VERSION_PATTERN = re.compile(r"^[0-9][0-9A-Za-z.+!_-]*$")


def normalized_name(package: str) -> str:
    """A package name as pip compares them (PEP 503): lower case, runs of "-", "_", "." as "-"."""
    return re.sub(r"[-_.]+", "-", package.strip()).lower()


def requirement_pin(line: str) -> tuple[str, str] | None:
    """(normalized name, version) of a `name==version` requirement line (comment, extras and marker
    dropped), or None for any other line."""
    requirement = line.split("#", 1)[0].strip()
    if "==" not in requirement:
        return None
    name, version = requirement.split("==", 1)
    return normalized_name(name.split("[", 1)[0]), version.split(";", 1)[0].strip()


def _package_of(line: str) -> str | None:
    """The package name a requirement line pins (normalized, extras dropped), or None."""
    pin = requirement_pin(line)
    return None if pin is None else pin[0]


def _pin_of(text: str, package: str) -> str | None:
    for line in text.splitlines():
        pin = requirement_pin(line)
        if pin is not None and pin[0] == normalized_name(package):
            return pin[1]
    return None


def pinned_version(folder: WorkerFolder) -> str | None:
    """The version the worker's requirements file pins for its framework package, if any."""
    if folder.requirements is None or folder.framework_package is None:
        return None
    return _pin_of(folder.requirements.read_text(), folder.framework_package)


def version_requirements_path(folder: WorkerFolder, version: str) -> Path:
    """Where a version's own requirements would be: `requirements-3.14.0.txt` beside `requirements.txt`
    (`requirements-jax-3.14.0.txt` beside a variant's `requirements-jax.txt`)."""
    assert folder.requirements is not None
    return folder.requirements.with_name(f"{folder.requirements.stem}-{version}.txt")


def requirements_text(folder: WorkerFolder, version: str | None = None, gpu: bool = False) -> str:
    """The requirements for `version` of the worker's framework (None: as pinned); see the module doc.

    Raises ValueError naming the file when the version cannot be applied.
    """
    if folder.requirements is None:
        raise ValueError(f"{folder.path / 'worker.toml'}: worker '{folder.label}' has no requirements file, "
                         "so it has no framework version to choose")
    text = folder.requirements.read_text()
    if version is not None:
        if not VERSION_PATTERN.match(version):
            raise ValueError(f"worker '{folder.label}': {version!r} is not a version (e.g. 3.14.0)")
        if folder.framework_package is None:
            raise ValueError(f"{folder.path / 'worker.toml'}: no 'framework_package', so '{folder.label}@{version}' "
                             "cannot say which pin to change")
        specific = version_requirements_path(folder, version)
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
    if _package_of(line) != normalized_name(package):
        return line
    name = line.split("==", 1)[0]
    return f"{name}=={version}\n"


def _renamed(line: str, package: str, replacement: str) -> str:
    if _package_of(line) != normalized_name(package):
        return line
    return f"{replacement}=={line.split('#', 1)[0].split('==', 1)[1].strip()}\n"


def worker_version_command(prog: str, description: str | None, gpu_help: str,
                           produce: Callable[[WorkerFolder, str | None, bool], str],
                           argv: list[str] | None = None) -> None:
    """The command line `python -m cxrbench_worker.requirements` and `.locks` share: WORKER_DIR
    [--version V] [--variant NAME] [--gpu], printing what `produce` makes of them; an error exits
    with its message."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("worker_dir", type=Path, help="the worker folder, e.g. workers/keras")
    parser.add_argument("--version", default=None, help="framework version (default: the pinned one)")
    parser.add_argument("--variant", default=None,
                        help="the worker's variant (worker.toml's [variants.NAME]; default or empty: none)")
    parser.add_argument("--gpu", action="store_true", help=gpu_help)
    args = parser.parse_args(argv)
    try:
        # An image build's first stage copies worker.toml, the requirements and the locks, not the code.
        folder = WorkerFolder.read(args.worker_dir, require_package=False, variant=args.variant or None)
        sys.stdout.write(produce(folder, args.version or None, args.gpu))
    except ValueError as error:  # a lock's LockError included
        raise SystemExit(f"error: {error}") from None


def main(argv: list[str] | None = None) -> None:
    """`python -m cxrbench_worker.requirements WORKER_DIR [--version V] [--variant NAME] [--gpu]`: print them."""
    worker_version_command("python -m cxrbench_worker.requirements", __doc__,
                           "rename the packages of worker.toml's [gpu] table", requirements_text, argv)


if __name__ == "__main__":
    main()
