"""Keras on TensorFlow: TensorFlow's settings through the SDK's `tensorflow_settings`, shared with the
TensorFlow worker, so both set and report TensorFlow alike."""

from __future__ import annotations

import tensorflow as tf

from cxrbench_worker import tensorflow_settings
from cxrbench_worker.backend import DeviceMemory

# XLA is the TensorFlow worker's opt-in too (Keras's own "auto" turns it on only on a GPU).
JIT_COMPILE_DEFAULT = False
_memory_growth = "not set"


def prepare() -> None:
    """GPU memory growth on (tensorflow_settings.enable_memory_growth), before TF's runtime starts."""
    global _memory_growth
    _memory_growth = tensorflow_settings.enable_memory_growth()


def jit_conflict(jit_compile: bool, deterministic: bool) -> str | None:
    """Keras silently compiles without XLA while TF's op determinism is on: refused instead."""
    if jit_compile and deterministic:
        return ("Keras turns XLA off while TensorFlow's op determinism is on; "
                "ask for numerics.deterministic = false to use it")
    return None


def set_threads(threads: int) -> None:
    """Intra-op `threads`, inter-op 1; TF fixes both when its runtime starts (first op run).

    Raises tensorflow_settings.ThreadPoolsFixed when the runtime already runs with other values.
    """
    tensorflow_settings.set_thread_pools(threads)


def set_numerics(allow_tf32: bool, deterministic: bool) -> dict[str, str]:
    """TF32 on or off explicitly (TF enables it by default on Ampere+) and op determinism."""
    tensorflow_settings.set_numerics(allow_tf32, deterministic)
    return {}


def numerics_flags() -> dict[str, str]:
    """TF32, op determinism and cuDNN autotuning as TensorFlow has them now."""
    state = tensorflow_settings.numerics_state()
    determinism = str(state.op_determinism).lower()
    return {"allow_tf32": str(state.allow_tf32).lower(), "op_determinism": determinism, "deterministic": determinism,
            "cudnn_autotune": state.cudnn_autotune, "gpu_memory_growth": _memory_growth}


def thread_count() -> int:
    """Intra-op threads in use: the configured number, else the CPUs this process may run on."""
    return tensorflow_settings.intra_op_threads()


def versions_and_device() -> tuple[dict[str, str], str | None]:
    """TensorFlow's version (and its CUDA build's), and the GPU's name when one is visible."""
    return {"tensorflow": tf.__version__, **tensorflow_settings.cuda_versions()}, tensorflow_settings.gpu_device()


def synchronize() -> None:
    """A barrier on every device (TF's ops return once queued)."""
    tensorflow_settings.synchronize()


def device_memory(reset_peak: bool, started: bool) -> DeviceMemory:
    """TF's GPU allocator; nothing is read before a model was built (`started`): reading it starts
    TF's runtime, which fixes the thread pools that Configure still sets."""
    return tensorflow_settings.device_memory(reset_peak, started)
