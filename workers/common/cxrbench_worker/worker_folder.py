"""A worker folder: `workers/<name>/` with `worker.toml` naming its backend class and requirements.

Read by the worker process (to build its backend) and by the harness (to list workers and create
their environments); plain TOML, no framework import needed to read it.
"""

from __future__ import annotations

import importlib
import os
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not at run time: reading a worker.toml needs only the standard library
    from cxrbench_worker.backend import Backend


@dataclass(frozen=True)
class WorkerFolder:
    """The parsed `worker.toml` of one worker folder."""

    path: Path
    name: str
    description: str
    backend: str  # "module:Class", the module relative to the folder
    requirements: Path | None  # None: runs in the harness's own interpreter (only the null worker)
    framework_package: str | None
    listed: bool  # False keeps it out of `--workers all` (the null worker)
    # Variables set in the worker process before its backend is imported (e.g. KERAS_BACKEND).
    environment: dict[str, str]
    # GPU images only: package renames, e.g. {"tensorflow-cpu": "tensorflow[and-cuda]"} (same version).
    gpu_packages: dict[str, str]

    @classmethod
    def read(cls, path: Path) -> "WorkerFolder":
        """Parse `path/worker.toml`; raises ValueError naming the file and the field at fault."""
        toml_path = path / "worker.toml"
        try:
            data = tomllib.loads(toml_path.read_text())
        except FileNotFoundError:
            raise ValueError(f"{toml_path}: missing (every worker folder needs a worker.toml)") from None
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{toml_path}: not valid TOML ({error})") from None
        for key in ("name", "backend"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise ValueError(f"{toml_path}: field '{key}' is required (a non-empty string)")
        if ":" not in data["backend"]:
            raise ValueError(f"{toml_path}: field 'backend' must look like 'module:Class', got {data['backend']!r}")
        requirements = data.get("requirements")
        if requirements is not None and not (path / requirements).is_file():
            raise ValueError(f"{toml_path}: field 'requirements' names {requirements!r}, which does not exist")
        environment = data.get("environment", {})
        if not isinstance(environment, dict) or not all(isinstance(v, str) for v in environment.values()):
            raise ValueError(f"{toml_path}: table 'environment' must map names to strings")
        gpu_packages = data.get("gpu", {}).get("packages", {})
        if not isinstance(gpu_packages, dict) or not all(isinstance(v, str) for v in gpu_packages.values()):
            raise ValueError(f"{toml_path}: table 'gpu.packages' must map package names to package names")
        return cls(
            path=path,
            name=data["name"],
            description=data.get("description", ""),
            backend=data["backend"],
            requirements=path / requirements if requirements else None,
            framework_package=data.get("framework_package"),
            listed=bool(data.get("listed", True)),
            environment=dict(environment),
            gpu_packages=dict(gpu_packages),
        )

    def load_backend(self) -> "Backend":
        """Import the backend class from the folder and instantiate it (imports the framework)."""
        module_name, class_name = self.backend.split(":", 1)
        os.environ.update(self.environment)  # before the import: frameworks read these at import time
        sys.path.insert(0, str(self.path))
        module = importlib.import_module(module_name)
        backend_class = getattr(module, class_name, None)
        if backend_class is None:
            raise ValueError(f"{self.path / 'worker.toml'}: {module_name} has no class {class_name}")
        return backend_class()
