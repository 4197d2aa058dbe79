"""Process-wide settings of the Keras backend: threads, TF32, determinism, devices, versions, memory.

Only the TensorFlow backend has these knobs wired up; on another backend the setters do nothing
and the read-backs say "n/a", so the worker still runs there (see worker.toml).
"""

from __future__ import annotations

import os

import keras

from cxrbench_worker.backend import DeviceMemory
from cxrbench_worker.host import cuda_total_memory


def on_tensorflow() -> bool:
    """True when Keras runs on its TensorFlow backend."""
    return keras.backend.backend() == "tensorflow"


def gpu_visible() -> bool:
    """Whether the backend sees a GPU (mixed precision is only offered there)."""
    if on_tensorflow():
        import tensorflow as tf
        return bool(tf.config.list_physical_devices("GPU"))
    if keras.backend.backend() == "jax":
        import jax
        return any(d.platform == "gpu" for d in jax.devices())
    if keras.backend.backend() == "torch":
        import torch
        return torch.cuda.is_available()
    return False


def set_threads(threads: int) -> None:
    """Intra-op `threads`, inter-op 1; TF fixes both when its runtime starts (first op run).

    Raises RuntimeError when the runtime already runs with other values: a new worker is needed.
    """
    if not on_tensorflow() or threads <= 0:
        return
    import tensorflow as tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        current = tf.config.threading.get_intra_op_parallelism_threads()
        raise RuntimeError(f"TensorFlow's runtime already started with intra-op threads "
                           f"{current or 'default'}; start a new worker for {threads}") from None


def set_numerics(allow_tf32: bool, deterministic: bool) -> None:
    """TF32 on or off explicitly (TF enables it by default on Ampere+) and op determinism."""
    if not on_tensorflow():
        return
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config
    tf.config.experimental.enable_tensor_float_32_execution(allow_tf32)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    else:
        # Not in tf.config's public API, but the only way back once it was switched on.
        tf_config.disable_op_determinism()


def numerics_flags() -> dict[str, str]:
    """The backend's numerics flags as it has them now."""
    flags = {"keras_backend": keras.backend.backend(),
             "dtype_policy": keras.config.dtype_policy().name}
    if on_tensorflow():
        import tensorflow as tf
        from tensorflow.python.framework import config as tf_config
        flags["allow_tf32"] = str(tf.config.experimental.tensor_float_32_execution_enabled()).lower()
        flags["op_determinism"] = str(tf_config.is_op_determinism_enabled()).lower()
    else:
        flags["allow_tf32"] = flags["op_determinism"] = "n/a"
    return flags


def thread_count() -> int:
    """Intra-op threads in use: the configured number, else the CPUs this process may run on."""
    if on_tensorflow():
        import tensorflow as tf
        configured = tf.config.threading.get_intra_op_parallelism_threads()
        if configured > 0:
            return configured
    return len(os.sched_getaffinity(0))


def versions_and_device() -> tuple[dict[str, str], str | None]:
    """Backend framework versions, and the GPU's name when one is visible (else None)."""
    if on_tensorflow():
        import tensorflow as tf
        versions = {"tensorflow": tf.__version__}
        build = tf.sysconfig.get_build_info()
        if build.get("is_cuda_build"):
            versions["cuda"] = str(build.get("cuda_version"))
            versions["cudnn"] = str(build.get("cudnn_version"))
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
            return versions, f"gpu:0 ({name})"
        return versions, None
    module = __import__(keras.backend.backend())
    return {keras.backend.backend(): getattr(module, "__version__", "unknown")}, None


def device_memory(reset_peak: bool, started: bool) -> DeviceMemory:
    """The GPU allocator's bytes in use, on the TensorFlow or torch backend; nothing on CPU.

    On TensorFlow nothing is read before a model was built (`started`): reading the allocator
    starts TF's runtime, which fixes the thread pools that Configure still sets.
    """
    if on_tensorflow():
        import tensorflow as tf
        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return DeviceMemory()
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
        if not started:
            return DeviceMemory(device=f"gpu:0 ({name})")
        info = tf.config.experimental.get_memory_info("GPU:0")
        if reset_peak:
            tf.config.experimental.reset_memory_stats("GPU:0")
        return DeviceMemory(f"gpu:0 ({name})", True, int(info["peak"]), int(info["current"]),
                            cuda_total_memory())
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
