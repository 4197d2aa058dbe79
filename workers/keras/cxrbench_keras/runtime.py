"""The settings module of the Keras backend this process runs on: the one place that picks it.

KERAS_BACKEND (worker.toml's [environment], or a variant's: `keras[jax]`, `keras[torch]`) decides
the backend when Keras is imported; `backends/on_<backend>.py` then sets and reports that framework's
threads, TF32, determinism, device and memory (see `backends/__init__.py` for what each offers).
"""

from __future__ import annotations

import importlib
from types import ModuleType

import keras

# Keras backend -> the module that knows its framework's settings.
SETTINGS_MODULES = {"tensorflow": "on_tensorflow", "jax": "on_jax", "torch": "on_torch"}


def backend_name() -> str:
    """The backend Keras runs on ("tensorflow", "jax", "torch")."""
    return keras.backend.backend()


def backend_settings() -> ModuleType:
    """The running backend's settings module; NotImplementedError for a backend this worker cannot
    set and report (Keras's "numpy" and "openvino" backends train nothing)."""
    name = backend_name()
    if name not in SETTINGS_MODULES:
        raise NotImplementedError(f"the Keras worker runs on the backends {', '.join(SETTINGS_MODULES)}, "
                                  f"not {name!r}: set KERAS_BACKEND to one of them (worker.toml's [environment] "
                                  "or a [variants.<name>] table)")
    return importlib.import_module(f"{__package__}.backends.{SETTINGS_MODULES[name]}")
