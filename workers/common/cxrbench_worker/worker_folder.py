"""A worker folder: `workers/<name>/` with `worker.toml` naming its backend class and requirements.

Read by the worker process (to build its backend) and by the harness (to list workers and create
their environments); plain TOML, no framework import needed to read it.

A worker's code is one package inside its folder, `cxrbench_<name>/`: its modules are imported as
`cxrbench_keras.model`, never as a bare `model`, so no worker module can shadow an installed package
or another worker's module. Worker names are unique, hence so are the package names.

A worker may declare variants, `[variants.<variant>]` tables: the same code run another way, e.g.
Keras on its JAX backend. A variant has its own requirements (so its own locks and environment),
its environment variables (merged over the worker's) and, when it says so, its own `[gpu]` table;
`WorkerFolder.read(path, variant="jax")` (or `.with_variant("jax")`) gives the folder as that
variant sees it, and everything downstream (requirements, locks, environments, images) reads it
like any worker folder. Its label is `keras[jax]` (cxrbench_worker.worker_labels).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxrbench_worker.worker_labels import VARIANT_PATTERN, worker_label

if TYPE_CHECKING:  # not at run time: reading a worker.toml needs only the standard library
    from cxrbench_worker.backend import Backend

SDK_PACKAGE = "cxrbench_worker"  # the SDK's own name, which no worker's package may take


@dataclass(frozen=True)
class WorkerVariant:
    """One `[variants.<name>]` table of a worker.toml, as declared (not yet merged with the worker's)."""

    name: str
    description: str
    requirements: Path
    environment: dict[str, str]  # merged over the worker's [environment]
    # None: the worker's own [gpu] table holds; a table here replaces it whole (packages and base image).
    gpu_packages: dict[str, str] | None
    base_image: str | None


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
    # GPU images only: the CUDA base image ([gpu] base_image; compose.yaml repeats it), None without one.
    base_image: str | None = None
    # The variants it declares, by name; and which one this object describes (None: the worker itself).
    variants: dict[str, WorkerVariant] | None = None
    variant: str | None = None

    @property
    def label(self) -> str:
        """"keras", or "keras[jax]" for a variant: how the worker process names itself."""
        return worker_label(self.name, self.variant)

    @property
    def variant_names(self) -> tuple[str, ...]:
        """The names of the variants the worker.toml declares, in its order."""
        return tuple(self.variants or ())

    def with_variant(self, variant: str | None) -> WorkerFolder:
        """This worker as its variant `variant` runs it (None: as itself); ValueError naming the known
        variants when it has no such variant."""
        if variant is None:
            return self if self.variant is None else WorkerFolder.read(self.path)
        if self.variant is not None:
            raise ValueError(f"worker '{self.label}' is already a variant; ask the worker '{self.name}' for one")
        declared = self.variants or {}
        if not declared:
            raise ValueError(f"worker '{self.name}' has no variants, so no '{variant}' "
                             f"({self.path / 'worker.toml'} declares no [variants.<name>] table)")
        if variant not in declared:
            raise ValueError(f"worker '{self.name}' has no variant '{variant}' (its variants: {', '.join(declared)})")
        chosen = declared[variant]
        own_gpu = chosen.gpu_packages is not None or chosen.base_image is not None
        return WorkerFolder(
            path=self.path, name=self.name, description=chosen.description or self.description,
            backend=self.backend, requirements=chosen.requirements, framework_package=self.framework_package,
            listed=self.listed, environment={**self.environment, **chosen.environment},
            gpu_packages=dict(chosen.gpu_packages or {}) if own_gpu else self.gpu_packages,
            base_image=chosen.base_image if own_gpu else self.base_image,
            variants=self.variants, variant=variant)

    @classmethod
    def read(cls, path: Path, require_package: bool = True, variant: str | None = None) -> WorkerFolder:
        """Parse `path/worker.toml`; raises ValueError naming the file and the field at fault.

        `require_package` False skips only the check that the backend's package folder is there,
        for readers that have the worker.toml and requirements alone (an image's requirements stage).
        `variant`: the folder as that variant sees it (see the module doc).
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
        gpu_packages, base_image = _gpu_table(toml_path, "gpu", data.get("gpu", {}))
        folder = cls(
            path=path,
            name=data["name"],
            description=data.get("description", ""),
            backend=data["backend"],
            requirements=path / requirements if requirements else None,
            framework_package=data.get("framework_package"),
            listed=bool(data.get("listed", True)),
            environment=dict(environment),
            gpu_packages=gpu_packages,
            base_image=base_image,
            variants=_variants(toml_path, data.get("variants", {}), requirements is not None),
        )
        return folder.with_variant(variant)

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


def _gpu_table(toml_path: Path, where: str, table: Any) -> tuple[dict[str, str], str | None]:
    """(package renames, base image) of a `[gpu]` table; ValueError naming the file and the table."""
    if not isinstance(table, dict):
        raise ValueError(f"{toml_path}: '{where}' must be a table")
    packages = table.get("packages", {})
    if not isinstance(packages, dict) or not all(isinstance(v, str) for v in packages.values()):
        raise ValueError(f"{toml_path}: table '{where}.packages' must map package names to package names")
    base_image = table.get("base_image")
    if base_image is not None and (not isinstance(base_image, str) or not base_image):
        raise ValueError(f"{toml_path}: field '{where}.base_image' must be an image name")
    return dict(packages), base_image


def _variants(toml_path: Path, tables: Any, has_requirements: bool) -> dict[str, WorkerVariant] | None:
    """The `[variants.<name>]` tables, checked; None when there are none."""
    if not isinstance(tables, dict):
        raise ValueError(f"{toml_path}: 'variants' must be a table of tables ([variants.<name>])")
    if tables and not has_requirements:
        raise ValueError(f"{toml_path}: a worker without requirements has no environment to vary; drop [variants]")
    variants: dict[str, WorkerVariant] = {}
    for name, table in tables.items():
        where = f"variants.{name}"
        if not VARIANT_PATTERN.match(name):
            raise ValueError(f"{toml_path}: variant name {name!r} must be lower case letters, digits and '_', "
                             "starting with a letter (it becomes part of file and service names)")
        if not isinstance(table, dict):
            raise ValueError(f"{toml_path}: '{where}' must be a table")
        unknown = sorted(set(table) - {"description", "requirements", "environment", "gpu"})
        if unknown:
            raise ValueError(f"{toml_path}: table '{where}' has unknown field(s) {', '.join(unknown)} "
                             "(known: description, requirements, environment, gpu)")
        requirements = table.get("requirements")
        if not isinstance(requirements, str) or not (toml_path.parent / requirements).is_file():
            raise ValueError(f"{toml_path}: field '{where}.requirements' must name the variant's requirements "
                             f"file beside worker.toml (got {requirements!r})")
        environment = table.get("environment", {})
        if not isinstance(environment, dict) or not all(isinstance(v, str) for v in environment.values()):
            raise ValueError(f"{toml_path}: table '{where}.environment' must map names to strings")
        gpu_packages, base_image = (_gpu_table(toml_path, f"{where}.gpu", table["gpu"]) if "gpu" in table
                                    else (None, None))
        variants[name] = WorkerVariant(name, str(table.get("description", "")), toml_path.parent / requirements,
                                       dict(environment), gpu_packages, base_image)
    return variants or None


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
