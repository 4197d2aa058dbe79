"""A worker folder: `workers/<name>/` with `worker.toml` naming its backend class and requirements.

Read by the worker process (to build its backend) and by the harness (to list workers and create
their environments); plain TOML, no framework import needed to read it.

A worker's code is one package inside its folder, `cxrbench_<name>/`: its modules are imported as
`cxrbench_keras.model`, never as a bare `model`, so no worker module can shadow an installed package
or another worker's module. Worker names are unique, hence so are the package names.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not at run time: reading a worker.toml needs only the standard library
    from cxrbench_worker.backend import Backend

SDK_PACKAGE = "cxrbench_worker"  # the SDK's own name, which no worker's package may take


@dataclass(frozen=True)
class WorkerFolder:
    """The parsed `worker.toml` of one worker folder."""

    path: Path
    name: str
    description: str
    backend: str  # "cxrbench_<name>.module:Class"; the package is the folder's cxrbench_<name>/
    requirements: Path | None  # None: runs in the harness's own interpreter (only the null worker)
    framework_package: str | None
    listed: bool  # False keeps it out of `--workers all` (the null worker)
    # Variables set in the worker process before its backend is imported (e.g. KERAS_BACKEND).
    environment: dict[str, str]
    # GPU images only: package renames, e.g. {"tensorflow-cpu": "tensorflow[and-cuda]"} (same version).
    gpu_packages: dict[str, str]

    @classmethod
    def read(cls, path: Path, require_package: bool = True) -> WorkerFolder:
        """Parse `path/worker.toml`; raises ValueError naming the file and the field at fault.

        `require_package` False skips only the check that the backend's package folder is there,
        for readers that have the worker.toml and requirements alone (an image's requirements stage).
        """
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
        _check_backend(toml_path, data["name"], data["backend"], require_package)
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

    @property
    def package(self) -> str:
        """The worker's own package, `cxrbench_<name>`: the backend module's top-level name."""
        return self.backend.split(":", 1)[0].split(".", 1)[0]

    def load_backend(self) -> Backend:
        """Import the backend class from the worker's package and instantiate it (imports the framework).

        Only the package is imported, from its folder: the worker folder is not put on sys.path,
        so nothing else in it can be imported, and no installed module is shadowed.
        """
        module_name, class_name = self.backend.split(":", 1)
        os.environ.update(self.environment)  # before the import: frameworks read these at import time
        self._import_package()
        module = importlib.import_module(module_name)
        backend_class = getattr(module, class_name, None)
        if backend_class is None:
            raise ValueError(f"{self.path / 'worker.toml'}: {module_name} has no class {class_name}")
        return backend_class()

    def _import_package(self) -> None:
        """Import `cxrbench_<name>/__init__.py` under its package name; its submodules follow from
        the package's own path. Refuses a package of that name already imported from elsewhere."""
        init = self.path / self.package / "__init__.py"
        loaded = sys.modules.get(self.package)
        if loaded is not None:
            loaded_from = getattr(loaded, "__file__", None)
            if loaded_from is None or Path(loaded_from).resolve() != init.resolve():
                raise ValueError(f"{self.path / 'worker.toml'}: package {self.package!r} is already imported "
                                 f"from {loaded_from or 'elsewhere'}; a worker's package name must be its own")
            return
        spec = importlib.util.spec_from_file_location(self.package, init,
                                                      submodule_search_locations=[str(init.parent)])
        if spec is None or spec.loader is None:
            raise ValueError(f"{self.path / 'worker.toml'}: cannot import {init}")
        package = importlib.util.module_from_spec(spec)
        sys.modules[self.package] = package  # before running it: its relative imports look it up
        try:
            spec.loader.exec_module(package)
        except BaseException:
            del sys.modules[self.package]
            raise


def _check_backend(toml_path: Path, name: str, backend: str, require_package: bool) -> None:
    """ValueError naming the worker.toml and the field unless `backend` is
    "cxrbench_<name>.module:Class" with cxrbench_<name>/__init__.py beside the worker.toml.

    The package is named after the worker, and worker names are unique, so no two workers' packages
    share a name; the SDK's own name is refused."""
    package = f"cxrbench_{name}"
    if not package.isidentifier() or package == SDK_PACKAGE:
        raise ValueError(f"{toml_path}: field 'name' is {name!r}, which cannot name the worker's package "
                         f"'cxrbench_{name}' (a Python identifier other than {SDK_PACKAGE!r}); rename the worker")
    module_name, colon, class_name = backend.partition(":")
    parts = module_name.split(".")
    if not colon or not class_name.isidentifier() or not all(part.isidentifier() for part in parts):
        raise ValueError(f"{toml_path}: field 'backend' must look like '{package}.module:Class', got {backend!r}")
    if parts[0] != package or len(parts) < 2:
        raise ValueError(f"{toml_path}: field 'backend' must name a module of the worker's own package "
                         f"{package!r} (e.g. '{package}.trainer:{class_name}'), got {backend!r}; a bare or "
                         "shared module name could shadow an installed package or another worker's module")
    if require_package and not (toml_path.parent / package / "__init__.py").is_file():
        raise ValueError(f"{toml_path}: field 'backend' names package {package!r}, but "
                         f"{toml_path.parent / package / '__init__.py'} does not exist (the worker's code "
                         "lives in that package, beside worker.toml)")
