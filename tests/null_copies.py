"""Copies of the null worker under other names, so a study can have several workers without a framework.

Each copy is a worker folder of its own (`null_b/` with package `cxrbench_null_b`), found by the
harness through $CXRBENCH_EXTRA_WORKERS as any out-of-tree worker is.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

NULL = Path(__file__).resolve().parents[1] / "workers" / "null"


def null_copies(where: Path, names: list[str]) -> dict[str, str]:
    """Make a null worker folder per name under `where`; returns the environment that lists them."""
    folders = []
    for name in names:
        folder = where / name
        if not folder.exists():
            shutil.copytree(NULL / "cxrbench_null", folder / f"cxrbench_{name}",
                            ignore=shutil.ignore_patterns("__pycache__"))
            toml = (NULL / "worker.toml").read_text()
            (folder / "worker.toml").write_text(toml.replace('name = "null"', f'name = "{name}"')
                                                .replace("cxrbench_null.", f"cxrbench_{name}."))
        folders.append(str(folder))
    return {"CXRBENCH_EXTRA_WORKERS": os.pathsep.join(folders)}
