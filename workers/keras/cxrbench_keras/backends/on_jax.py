"""Keras on JAX: XLA's switches, set and reported as the JAX worker sets them (the SDK's
`cxrbench_worker.jax_settings`, shared by both)."""

from __future__ import annotations

import os

from cxrbench_worker import jax_settings
from cxrbench_worker.backend import DeviceMemory

# Keras's own "auto" on JAX is jit (every device): JAX's steps are meant to be compiled, and an eager
# step dispatches every op on its own. jit_compile=false runs them eagerly nonetheless.
JIT_COMPILE_DEFAULT = True

set_threads = jax_settings.set_threads
thread_count = jax_settings.thread_count
matmul_precision = jax_settings.matmul_precision


def prepare() -> None:
    """Nothing: the first Configure sets XLA's determinism before anything starts JAX's backend."""


def jit_conflict(jit_compile: bool, deterministic: bool) -> str | None:
    """None: XLA's determinism flag holds for jitted steps and eager ops alike."""
    return None


def set_numerics(allow_tf32: bool, deterministic: bool) -> dict[str, str]:
    """Full float32 matmuls unless TF32 is allowed; deterministic GPU ops where XLA has not started
    yet; XLA's compiled programs kept on disk (jax_settings.use_compilation_cache). Returns a note
    when determinism could not be changed any more."""
    jax_settings.set_matmul_precision(allow_tf32)
    jax_settings.use_compilation_cache()
    note = jax_settings.set_deterministic(deterministic)
    return {"deterministic_note": note} if note else {}


def numerics_flags() -> dict[str, str]:
    """Precision, TF32, determinism and GPU memory growth as JAX has them now (starts the backend)."""
    on_gpu = jax_settings.device().platform == "gpu"
    return {
        **jax_settings.numerics_flags(),
        "gpu_memory_growth": ("true" if os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "").lower() == "false"
                              else "false (XLA preallocates 75% of the GPU)") if on_gpu else "n/a (no GPU)",
    }


def versions_and_device() -> tuple[dict[str, str], str | None]:
    """jax's and jaxlib's versions (and the CUDA platform's on a GPU), and the GPU Keras computes on."""
    name = jax_settings.device_name()
    return jax_settings.versions(), None if name.startswith("cpu") else name


def synchronize() -> None:
    """Nothing to wait for: train_on_batch and predict_on_batch return host values, which waited."""


def device_memory(reset_peak: bool, started: bool) -> DeviceMemory:
    """The GPU allocator's bytes (see jax_settings.device_memory: its peak cannot be reset)."""
    return jax_settings.device_memory()
