"""Provenance: everything that can vary between two runs, recorded with every run."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from cxrbench_worker.host import cpu_model

REPO_ROOT = Path(__file__).resolve().parents[2]


def git_state(repo: Path = REPO_ROOT) -> dict:
    """Commit of the checkout and whether it has uncommitted changes (None when not a git checkout);
    with changes, `changes_sha256` tells two checkouts with the same edits from two with others."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                    capture_output=True, text=True, check=True).stdout.strip())
        changes = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=repo, capture_output=True,
                                 check=True).stdout if dirty else b""
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    state: dict = {"commit": commit, "dirty": dirty}
    if dirty:
        state["changes_sha256"] = hashlib.sha256(changes).hexdigest()
    return state


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def host_facts() -> dict:
    """The machine the harness runs on."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "python": platform.python_version(),
    }


def harness_versions() -> dict:
    """Versions of the harness's own packages that touch the numbers (metrics, transport)."""
    names = ("numpy", "scikit-learn", "scipy", "grpcio", "protobuf", "safetensors")
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def collect() -> dict:
    """Provenance of this harness process: git, host, versions, command line."""
    return {
        "git": git_state(),
        "host": host_facts(),
        "harness_packages": harness_versions(),
        "command": sys.argv,
    }
