"""What a worker ran, in the words a reader uses: "Keras 3.15.1 on JAX 0.10.2", "JAX 0.10.2 (Flax 0.12.8)".

Built only from what the running worker reported (GetMetadata's framework_versions, kept in run.json),
never from its label or its requirements: `keras[jax]` is named after the Keras and JAX it ran.
"""

from __future__ import annotations

# Reported package -> its name in prose.
DISPLAY_NAMES = {"keras": "Keras", "tensorflow": "TensorFlow", "torch": "PyTorch", "jax": "JAX", "flax": "Flax"}
# The frameworks a worker is named after, first match wins: Keras runs on one of the others.
PRIMARY = ("keras", "torch", "tensorflow", "jax")
# A library a framework's worker builds its models with, shown in brackets after the framework.
MODEL_LIBRARIES = {"jax": ("flax",)}
# The key under which the Keras worker reports the backend it runs on ("tensorflow", "jax", "torch").
KERAS_BACKEND = "keras_backend"


def _version(versions: dict[str, str], package: str) -> str:
    """The reported version without a local build tag ("2.14.1+cu130" -> "2.14.1"; the full one is in
    the frameworks line)."""
    return versions[package].split("+", 1)[0]


def _named(package: str, versions: dict[str, str]) -> str:
    """"JAX 0.10.2", with its model library in brackets when reported: "JAX 0.10.2 (Flax 0.12.8)"."""
    name = f"{DISPLAY_NAMES.get(package, package)} {_version(versions, package)}"
    libraries = [f"{DISPLAY_NAMES.get(library, library)} {_version(versions, library)}"
                 for library in MODEL_LIBRARIES.get(package, ()) if library in versions]
    return name + (f" ({', '.join(libraries)})" if libraries else "")


def framework_name(versions: dict[str, str]) -> str:
    """The framework a worker reported, as prose: "Keras 3.15.1 on TensorFlow 2.21.0", "PyTorch 2.14.1",
    "JAX 0.10.2 (Flax 0.12.8)"; the reported packages as "name version" pairs when none is known
    (python and numpy left out), "n/a" when it reported nothing."""
    primary = next((package for package in PRIMARY if package in versions), None)
    if primary == "keras":
        backend = versions.get(KERAS_BACKEND)
        keras = f"Keras {_version(versions, 'keras')}"
        if backend in versions:  # the backend's own version ("jax": "0.10.2")
            return f"{keras} on {_named(backend, versions)}"
        return f"{keras} on {DISPLAY_NAMES.get(backend, backend)}" if backend else keras
    if primary is not None:
        return _named(primary, versions)
    return ", ".join(f"{k} {v}" for k, v in sorted(versions.items()) if k not in ("python", "numpy")) or "n/a"
