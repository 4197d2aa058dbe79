"""Finds worker folders (`workers/<name>/worker.toml`) and resolves `--workers` selections.

A selection names workers, each optionally with a variant and a framework version:
`keras@3.14.0,keras@3.15.1` runs two Keras versions side by side, `keras,keras[jax],keras[torch]`
Keras on three backends (worker.toml's `[variants.jax]`, ...), each in its own environment (local)
or image (docker), and each is its own column in the report, labelled as written
(cxrbench_worker.worker_labels: `keras[jax]@3.14.0`; `keras-jax@3.14.0` in file and service names).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cxrbench_worker.requirements import VERSION_PATTERN, pinned_version, requirements_text
from cxrbench_worker.worker_folder import WorkerFolder
from cxrbench_worker.worker_labels import safe_label, split_label, worker_label

WORKERS_ROOT = Path(__file__).resolve().parents[2] / "workers"
# Worker folders kept outside the checkout (a framework of your own, a copy under another name), as
# a path list: found beside those under workers/, under the same rules.
EXTRA_WORKERS_VARIABLE = "CXRBENCH_EXTRA_WORKERS"

__all__ = ["WorkerSpec", "discover_workers", "pinned_version", "resolve_workers", "WORKERS_ROOT"]


@dataclass(frozen=True)
class WorkerSpec:
    """One worker of a run: its folder (as its variant sees it), the framework version asked for, and
    its label in results."""

    folder: WorkerFolder  # WorkerFolder.with_variant(...) for a variant
    version: str | None = None  # None: the version its requirements file pins

    @property
    def name(self) -> str:
        """The worker's folder name ("keras", also for keras[jax]): what its --option switches address."""
        return self.folder.name

    @property
    def variant(self) -> str | None:
        """The folder's variant it runs ("jax" for keras[jax]), None for the worker itself."""
        return self.folder.variant

    @property
    def label(self) -> str:
        """Its key in results, logs and the report: "keras", "keras[jax]", "keras@3.14.0" or
        "keras[jax]@3.14.0", as written in --workers."""
        return worker_label(self.folder.name, self.folder.variant, self.version)

    @property
    def safe_label(self) -> str:
        """The label as file, service and model names have it: "keras-jax@3.14.0" for keras[jax]@3.14.0."""
        return safe_label(self.label)

    @property
    def framework_version(self) -> str | None:
        """The framework version this worker installs: the one asked for, else the pinned one."""
        return self.version or pinned_version(self.folder)

    def check_reported(self, reported: dict[str, str]) -> None:
        """RuntimeError when a version was asked for and the running worker reports another one.

        The worker reports its framework under the import name ("tensorflow" for tensorflow-cpu);
        local build tags ("2.14.1+cu128") are ignored.
        """
        package = self.folder.framework_package
        if not self.version or not package:
            return
        name = package.lower().removesuffix("-cpu").removesuffix("-gpu")
        running = reported.get(name)
        if running is not None and running.split("+", 1)[0] != self.version.split("+", 1)[0]:
            raise RuntimeError(f"worker '{self.label}' reports {name} {running}, not the {self.version} asked for; "
                               "its environment or image does not hold that version")

    def requirements(self, gpu: bool = False) -> str:
        """Its requirements text (see cxrbench_worker.requirements for the rule)."""
        return requirements_text(self.folder, self.version, gpu)


def extra_worker_folders() -> list[Path]:
    """The worker folders named in $CXRBENCH_EXTRA_WORKERS (each a folder with a worker.toml)."""
    entries = [Path(entry) for entry in os.environ.get(EXTRA_WORKERS_VARIABLE, "").split(os.pathsep) if entry]
    for entry in entries:
        if not (entry / "worker.toml").is_file():
            raise ValueError(f"${EXTRA_WORKERS_VARIABLE}: {entry} is not a worker folder (it has no worker.toml)")
    return entries


def discover_workers(root: Path = WORKERS_ROOT) -> dict[str, WorkerFolder]:
    """Every folder under `root` with a worker.toml, by worker name (the SDK folder has none), and,
    for the default root, those named in $CXRBENCH_EXTRA_WORKERS."""
    found: dict[str, WorkerFolder] = {}
    tomls = sorted(root.glob("*/worker.toml"))
    if root == WORKERS_ROOT:
        tomls += [folder / "worker.toml" for folder in extra_worker_folders()]
    for toml in tomls:
        folder = WorkerFolder.read(toml.parent)
        if folder.name in found:
            raise ValueError(f"{toml}: worker name '{folder.name}' is also used by {found[folder.name].path}")
        found[folder.name] = folder
    return found


def resolve_workers(selection: str, root: Path = WORKERS_ROOT) -> list[WorkerSpec]:
    """Turn "all" or "pytorch,keras[jax],keras@3.14.0" into worker specs, in the order given.

    "all" means every listed worker as itself, without its variants (the null worker, which only
    tests the harness, is unlisted but can be named). A variant must be one its worker.toml declares;
    a version ("keras@3.14.0") is checked for form here; whether pip can install it is found out
    when its environment or image is made.
    """
    available = discover_workers(root)
    names = [name.strip() for name in selection.split(",") if name.strip()]
    if not names:
        raise ValueError("--workers: empty selection (try 'all')")
    if names == ["all"]:
        return [WorkerSpec(folder) for folder in available.values() if folder.listed]
    chosen: list[WorkerSpec] = []
    for name in names:
        try:
            base, variant, version = split_label(name)
        except ValueError as error:
            raise ValueError(f"--workers: {error}") from None
        if base not in available:
            raise ValueError(f"--workers: unknown worker '{base}' (known: {', '.join(sorted(available))})")
        try:
            folder = available[base].with_variant(variant)
        except ValueError as error:
            raise ValueError(f"--workers: '{name}': {error}") from None
        if version is not None and not VERSION_PATTERN.match(version):
            raise ValueError(f"--workers: '{name}': {version!r} is not a version "
                             f"(write e.g. {worker_label(base, variant, '3.14.0')})")
        if version and (folder.requirements is None or folder.framework_package is None):
            raise ValueError(f"--workers: '{name}': worker '{base}' pins no framework, so it has no version to choose")
        spec = WorkerSpec(folder, version or None)
        if any(other.label == spec.label for other in chosen):
            raise ValueError(f"--workers: '{name}' is named twice")
        if any(other.name == base and other.variant == variant and other.framework_version == spec.framework_version
               for other in chosen):
            raise ValueError(f"--workers: '{name}' is the same {folder.label} {spec.framework_version} "
                             "as another worker in the list")
        chosen.append(spec)
    return chosen
