"""Finds worker folders (`workers/<name>/worker.toml`) and resolves `--workers` selections."""

from __future__ import annotations

from pathlib import Path

from cxrbench_worker.worker_folder import WorkerFolder

WORKERS_ROOT = Path(__file__).resolve().parents[1] / "workers"


def discover_workers(root: Path = WORKERS_ROOT) -> dict[str, WorkerFolder]:
    """Every folder under `root` with a worker.toml, by worker name (the SDK folder has none)."""
    found: dict[str, WorkerFolder] = {}
    for toml in sorted(root.glob("*/worker.toml")):
        folder = WorkerFolder.read(toml.parent)
        if folder.name in found:
            raise ValueError(f"{toml}: worker name '{folder.name}' is also used by {found[folder.name].path}")
        found[folder.name] = folder
    return found


def resolve_workers(selection: str, root: Path = WORKERS_ROOT) -> list[WorkerFolder]:
    """Turn "all" or "pytorch,null" into worker folders, in the order given.

    "all" means every listed worker (the null worker, which only tests the harness, is unlisted but
    can be named). A version suffix ("pytorch@2.14.1") must match the worker's pinned version until
    side-by-side versions arrive.
    """
    available = discover_workers(root)
    names = [name.strip() for name in selection.split(",") if name.strip()]
    if not names:
        raise ValueError("--workers: empty selection (try 'all')")
    if names == ["all"]:
        return [folder for folder in available.values() if folder.listed]
    chosen: list[WorkerFolder] = []
    for name in names:
        base, _, version = name.partition("@")
        if base not in available:
            raise ValueError(f"--workers: unknown worker '{base}' (known: {', '.join(sorted(available))})")
        folder = available[base]
        if version and version != pinned_version(folder):
            raise ValueError(
                f"--workers: {name} asks for version {version}, but {folder.requirements} pins "
                f"{folder.framework_package}=={pinned_version(folder)}; running other versions is not supported yet"
            )
        if folder in chosen:
            raise ValueError(f"--workers: '{name}' is named twice")
        chosen.append(folder)
    return chosen


def pinned_version(folder: WorkerFolder) -> str | None:
    """The version its requirements file pins for the worker's framework package, if any."""
    if folder.requirements is None or folder.framework_package is None:
        return None
    for line in folder.requirements.read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement.lower().startswith(f"{folder.framework_package.lower()}=="):
            return requirement.split("==", 1)[1].strip()
    return None
