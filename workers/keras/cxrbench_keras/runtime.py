"""Process-wide settings of the Keras backend: threads, TF32, determinism, devices, versions, memory.

Only the TensorFlow backend has these knobs wired up, through the SDK's `tensorflow_settings`
(shared with the TensorFlow worker, so both set and report TensorFlow alike); on another backend
the setters do nothing and the read-backs say "n/a", so the worker still runs there (see worker.toml).
"""

from __future__ import annotations

import os

import keras

from cxrbench_worker import tensorflow_settings
from cxrbench_worker.backend import DeviceMemory


def on_tensorflow() -> bool:
    """True when Keras runs on its TensorFlow backend."""
    return keras.backend.backend() == "tensorflow"


def set_threads(threads: int) -> None:
    """Intra-op `threads`, inter-op 1; TF fixes both when its runtime starts (first op run).

    Raises tensorflow_settings.ThreadPoolsFixed when the runtime already runs with other values:
    a new worker is needed.
    """
    if on_tensorflow():
        tensorflow_settings.set_thread_pools(threads)


def enable_memory_growth() -> str:
    """GPU memory growth on (TensorFlow backend; see tensorflow_settings.enable_memory_growth), what
    holds as a report value; "n/a" on other backends. Call before the runtime starts."""
    if on_tensorflow():
        return tensorflow_settings.enable_memory_growth()
    return "n/a"


def synchronize() -> None:
    """Wait until the backend's devices have finished the work queued so far.

    TensorFlow: a barrier on every device; torch: torch.cuda.synchronize; JAX: nothing to wait for
    here, since train_on_batch and predict_on_batch return host values, which waited already.
    """
    if on_tensorflow():
        tensorflow_settings.synchronize()
    elif keras.backend.backend() == "torch":
        import torch
        if torch.cuda.is_available():
            torch.cuda.synchronize()


def set_numerics(allow_tf32: bool, deterministic: bool) -> None:
    """TF32 on or off explicitly (TF enables it by default on Ampere+) and op determinism."""
    if on_tensorflow():
        tensorflow_settings.set_numerics(allow_tf32, deterministic)


def numerics_flags() -> dict[str, str]:
    """The backend's numerics flags as it has them now."""
    flags = {"keras_backend": keras.backend.backend(),
             "dtype_policy": keras.config.dtype_policy().name}
    if on_tensorflow():
        state = tensorflow_settings.numerics_state()
        flags["allow_tf32"] = str(state.allow_tf32).lower()
        flags["op_determinism"] = flags["deterministic"] = str(state.op_determinism).lower()
        flags["cudnn_autotune"] = state.cudnn_autotune
    else:
        flags["allow_tf32"] = flags["op_determinism"] = flags["deterministic"] = flags["cudnn_autotune"] = "n/a"
    return flags


def thread_count() -> int:
    """Intra-op threads in use: the configured number, else the CPUs this process may run on."""
    if on_tensorflow():
        return tensorflow_settings.intra_op_threads()
    return len(os.sched_getaffinity(0))


def versions_and_device() -> tuple[dict[str, str], str | None]:
    """Backend framework versions, and the GPU's name when one is visible (else None)."""
    if on_tensorflow():
        import tensorflow as tf
        versions = {"tensorflow": tf.__version__, **tensorflow_settings.cuda_versions()}
        return versions, tensorflow_settings.gpu_device()
    module = __import__(keras.backend.backend())
    return {keras.backend.backend(): getattr(module, "__version__", "unknown")}, None


def device_memory(reset_peak: bool, started: bool) -> DeviceMemory:
    """The GPU allocator's bytes in use, on the TensorFlow or torch backend; nothing on CPU.

    On TensorFlow nothing is read before a model was built (`started`): reading the allocator
    starts TF's runtime, which fixes the thread pools that Configure still sets.
    """
    if on_tensorflow():
        return tensorflow_settings.device_memory(reset_peak, started)
    if keras.backend.backend() == "torch":
        import torch
        if not torch.cuda.is_available():
            return DeviceMemory()
        index = torch.cuda.current_device()
        memory = DeviceMemory(f"cuda:{index} ({torch.cuda.get_device_name(index)})", True,
                              torch.cuda.max_memory_allocated(index),
                              torch.cuda.memory_allocated(index),
                              torch.cuda.get_device_properties(index).total_memory)
        if reset_peak:
            torch.cuda.reset_peak_memory_stats(index)
        return memory
    return DeviceMemory()  # JAX keeps peak statistics per device but cannot reset them
