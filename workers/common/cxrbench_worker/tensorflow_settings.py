"""TensorFlow's process-wide settings, shared by the two workers that run on it: `tensorflow` (tf.nn
ops) and `keras` (Keras 3 on its TensorFlow backend). Thread pools, TF32 and op determinism, the
GPU's name, the CUDA build and the allocator's memory are set and read here once, so both workers
run TensorFlow alike and report it alike.

TensorFlow is imported inside each function, never at module level: the SDK is imported by the
harness and by the null worker, which have no framework.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cxrbench_worker.backend import DeviceMemory
from cxrbench_worker.host import cuda_total_memory


class ThreadPoolsFixed(RuntimeError):
    """TensorFlow's runtime already runs with other thread pools; only a new process can change them."""

    def __init__(self, requested: int, configured: int) -> None:
        super().__init__(f"TensorFlow's runtime already started with intra-op threads "
                         f"{configured or 'default'}; start a new worker for {requested}")
        self.requested = requested
        self.configured = configured  # TF's intra-op setting; 0 is its default


def set_thread_pools(threads: int) -> bool:
    """Intra-op `threads`, inter-op 1: one op at a time, each on `threads` cores, torch's work split.

    Returns False when there is nothing to set (`threads` <= 0 keeps TF's default, or the pools
    already have that size), True once set. TF fixes both pools when its runtime starts (the first
    op run, i.e. the first Configure): raises ThreadPoolsFixed if it already runs with another size.
    """
    import tensorflow as tf

    if threads <= 0 or tf.config.threading.get_intra_op_parallelism_threads() == threads:
        return False
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        raise ThreadPoolsFixed(threads, tf.config.threading.get_intra_op_parallelism_threads()) from None
    return True


def intra_op_threads() -> int:
    """Intra-op threads in use: the configured count, else TF's default (0), one per CPU this
    process may run on."""
    import tensorflow as tf

    return tf.config.threading.get_intra_op_parallelism_threads() or len(os.sched_getaffinity(0))


def enable_memory_growth() -> str:
    """Memory growth on for every visible GPU, so TF allocates what it uses rather than the whole
    device at start (as torch's caching allocator does); returns what holds, for the numerics report:
    "true", "false" with the reason, or "n/a (no GPU)".

    Call before TF's runtime starts (the backend's constructor): afterwards TF refuses the change.
    Listing physical devices does not start it.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "n/a (no GPU)"
    try:
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:
        pass  # the runtime already started; report what it runs with
    if all(tf.config.experimental.get_memory_growth(gpu) for gpu in gpus):
        return "true"
    return "false (TensorFlow's runtime started before it could be set)"


def synchronize() -> None:
    """Wait until every device has finished the ops queued so far.

    TF's GPU ops return once queued; `sync_devices` (TF 2.16 and newer) runs a barrier on every
    device. Older TF: waiting for the eager executor and reading a value back from each GPU does it.
    Lists logical devices, which starts TF's runtime: call only once a model was built.
    """
    import tensorflow as tf

    sync_devices = getattr(tf.test.experimental, "sync_devices", None)
    if sync_devices is not None:
        sync_devices()
        return
    for device in tf.config.list_logical_devices("GPU"):
        with tf.device(device.name):
            tf.constant(0.0).numpy()


def set_numerics(allow_tf32: bool, deterministic: bool) -> None:
    """TF32 on or off explicitly (TF enables it by default on Ampere and newer), then op determinism
    on or off. Call before the model is built: kernels are chosen when ops first run."""
    import tensorflow as tf

    # The public API can switch op determinism on but neither off nor read it back.
    from tensorflow.python.framework import config as tf_config

    tf.config.experimental.enable_tensor_float_32_execution(allow_tf32)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()


@dataclass(frozen=True)
class NumericsState:
    """TF's numerics switches as it has them now (each worker reports them under its own keys)."""

    allow_tf32: bool
    op_determinism: bool
    # TF times cuDNN's convolution algorithms on first use unless TF_CUDNN_USE_AUTOTUNE=0 (its
    # default is on); under op determinism it picks among deterministic algorithms only.
    cudnn_autotune: str


def numerics_state() -> NumericsState:
    """Read TF32 and op determinism back from TensorFlow."""
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    autotune = os.environ.get("TF_CUDNN_USE_AUTOTUNE", "").lower() not in ("0", "false")
    determinism = bool(tf_config.is_op_determinism_enabled())
    return NumericsState(allow_tf32=bool(tf.config.experimental.tensor_float_32_execution_enabled()),
                         op_determinism=determinism,
                         cudnn_autotune=("true (deterministic algorithms only)" if determinism else "true")
                         if autotune else "false")


def gpu_device() -> str | None:
    """"gpu:0 (NAME)" for the first GPU TensorFlow sees, None without one.

    Listing physical devices does not start TF's runtime, so this may be called before Configure.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "unknown")
    return f"gpu:0 ({name})"


def cuda_versions() -> dict[str, str]:
    """The CUDA and cuDNN versions TensorFlow was built against; empty for a build without CUDA."""
    import tensorflow as tf

    build = tf.sysconfig.get_build_info()
    if not build.get("is_cuda_build"):
        return {}
    return {"cuda": str(build.get("cuda_version", "unknown")), "cudnn": str(build.get("cudnn_version", "unknown"))}


def device_memory(reset_peak: bool, started: bool) -> DeviceMemory:
    """TF's GPU allocator's peak and current bytes, then its peak reset if `reset_peak`; nothing on CPU.

    Before a model was built (`started` False) only the GPU's name is given: reading the allocator
    starts TF's runtime, which would fix the thread pools that Configure still sets.
    """
    import tensorflow as tf

    device = gpu_device()
    if device is None:
        return DeviceMemory()
    if not started:
        return DeviceMemory(device=device)
    info = tf.config.experimental.get_memory_info("GPU:0")
    if reset_peak:
        tf.config.experimental.reset_memory_stats("GPU:0")
    return DeviceMemory(device=device, reported=True, peak_bytes=int(info["peak"]),
                        current_bytes=int(info["current"]), total_bytes=cuda_total_memory())
