"""JAX's process settings, set and reported alike by the `jax` worker and Keras on JAX (`keras[jax]`):
threads, matmul precision, determinism, the device and its memory.

JAX is imported inside the functions only, so the SDK imports without it. Nothing here starts JAX's
backend (its device client) unless it says so. XLA reads XLA_FLAGS once, when the backend starts
(the first device query or computation): the harness configures a worker before it asks anything
else, so the first Configure's determinism is the one XLA reads, and a later request for the other
setting is reported as not applied. GPU memory is not grabbed at start-up: the worker.toml sets
XLA_PYTHON_CLIENT_PREALLOCATE=false.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from cxrbench_worker.backend import DeviceMemory
from cxrbench_worker.host import cpu_model

DETERMINISTIC_FLAG = "--xla_gpu_deterministic_ops"
# Where JAX_COMPILATION_CACHE_DIR is unset, the worker's virtual environment keeps XLA's compiled
# programs in this folder of its own (use_compilation_cache).
COMPILATION_CACHE_FOLDER = "jax-compilation-cache"
# The CPUs this process was given when it started: a thread count picks the first of these.
_ALLOWED_CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def backend_started() -> bool:
    """Whether JAX's backend has started (after which XLA_FLAGS is read no more)."""
    from jax._src import xla_bridge

    return bool(xla_bridge.backends_are_initialized())


def deterministic_ops() -> bool:
    """XLA's deterministic GPU ops flag as XLA has it (or will have it when it starts): off unless set."""
    for flag in os.environ.get("XLA_FLAGS", "").split():
        if flag.startswith(DETERMINISTIC_FLAG):
            return flag.partition("=")[2].lower() not in ("false", "0")
    return False


def set_deterministic(deterministic: bool) -> str:
    """XLA's deterministic GPU ops on or off where the backend has not started yet. Returns a note when
    it has, runs on a GPU and has the other setting (a new worker is needed), else "".

    XLA's CPU code is deterministic either way; on a GPU the flag makes XLA refuse the atomics-based
    reductions and scatters whose order varies from run to run (slower)."""
    if backend_started():
        if deterministic == deterministic_ops() or device().platform == "cpu":
            return ""
        return (f"requested deterministic={str(deterministic).lower()}, kept {str(deterministic_ops()).lower()}: "
                "XLA read its flags when the backend started; start a new worker")
    flags = [flag for flag in os.environ.get("XLA_FLAGS", "").split() if not flag.startswith(DETERMINISTIC_FLAG)]
    os.environ["XLA_FLAGS"] = " ".join([*flags, f"{DETERMINISTIC_FLAG}={str(deterministic).lower()}"])
    return ""


def use_compilation_cache() -> str:
    """Keep XLA's compiled programs on disk, so that a new worker process (each run has one) loads the
    steps an earlier one compiled instead of compiling them again: ResNet-50's training step takes
    about 10 s to compile on 2 CPU cores, DenseNet-121's about a minute. Returns the folder, or "".

    JAX_COMPILATION_CACHE_DIR chooses the folder (JAX reads it itself); otherwise a virtual
    environment's own folder is used, so a cached environment of the harness keeps its programs and
    they go with it (in an image, /opt/venv's, for the container's life, where it may write). An
    interpreter the user already has (`--python`) gets none: its prefix is not ours to write. The
    cache's key covers the program, the compile options and XLA_FLAGS, jaxlib's version and the
    device, so a program loaded from it is the one XLA would compile; an entry that cannot be read
    is compiled afresh. Only the first step's time (the report's warm-up) changes."""
    import jax

    if jax.config.jax_compilation_cache_dir:  # JAX_COMPILATION_CACHE_DIR, or set by the caller
        return str(jax.config.jax_compilation_cache_dir)
    folder = Path(sys.prefix) / COMPILATION_CACHE_FOLDER
    if sys.prefix == sys.base_prefix or not os.access(sys.prefix, os.W_OK):
        return ""
    jax.config.update("jax_compilation_cache_dir", str(folder))
    return str(folder)


def set_matmul_precision(allow_tf32: bool) -> None:
    """Matmuls and convolutions in full float32 (an Ampere or newer GPU's default lets XLA round
    their float32 inputs to TF32's 10-bit mantissa), or TF32 when allowed. A jitted step is traced
    with the precision in force, so this may change at any time."""
    import jax

    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if allow_tf32 else "float32")


def matmul_precision() -> str:
    """The default precision of matmuls and convolutions as JAX has it now."""
    import jax

    return str(jax.config.jax_default_matmul_precision or "default")


def numerics_flags() -> dict[str, str]:
    """Precision, TF32 and determinism as JAX has them now (starts the backend: the device decides)."""
    on_gpu = device().platform == "gpu"
    precision = matmul_precision()
    return {
        "matmul_precision": precision,
        "allow_tf32": str(precision == "tensorfloat32" or (on_gpu and precision == "default")).lower(),
        # XLA's CPU code is deterministic; on a GPU, as the flag says.
        "deterministic": str(not on_gpu or deterministic_ops()).lower(),
        "xla_gpu_deterministic_ops": str(deterministic_ops()).lower(),
    }


def set_threads(threads: int) -> None:
    """Compute on the first `threads` CPUs this process was given, every thread of the process.

    XLA sizes its CPU thread pool from the CPUs the process may run on when its backend starts, and
    has no setting to change it afterwards; the affinity mask limits how many of those threads run at
    once, before or after the start. 0 keeps every CPU."""
    if threads <= 0 or not _ALLOWED_CPUS:
        return
    cpus = set(_ALLOWED_CPUS[:threads])
    for task in Path("/proc/self/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except (ProcessLookupError, PermissionError):
            pass  # a thread that ended meanwhile


def thread_count() -> int:
    """The CPUs this thread may run on: XLA's parallelism on a CPU."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def device() -> Any:
    """The device computations run on, JAX's first (starts the backend)."""
    import jax

    return jax.devices()[0]


def device_name() -> str:
    """"cuda:0 (NVIDIA H200)" on a GPU, "cpu (model name)" on a CPU; starts the backend."""
    chosen = device()
    if chosen.platform == "gpu":
        return f"cuda:{chosen.id} ({chosen.device_kind})"
    if chosen.platform == "cpu":
        return f"cpu ({cpu_model()})"
    return f"{chosen.platform}:{chosen.id} ({chosen.device_kind})"


def versions() -> dict[str, str]:
    """jax's and jaxlib's versions, and the CUDA platform's on a GPU (starts the backend)."""
    import jax
    import jaxlib

    found = {"jax": jax.__version__, "jaxlib": jaxlib.__version__}
    if device().platform == "gpu":
        found["cuda_platform"] = str(device().client.platform_version)
    return found


def device_memory() -> DeviceMemory:
    """The GPU allocator's bytes (JAX's memory_stats); nothing on a CPU or before the backend started.

    JAX cannot reset its peak: it is the process's lifetime peak, an upper bound on the peak since any
    reset (each run has a worker process of its own, so it is that run's peak)."""
    if not backend_started() or device().platform != "gpu":
        return DeviceMemory()
    stats = device().memory_stats() or {}
    current = int(stats.get("bytes_in_use", 0))
    return DeviceMemory(device_name(), True, int(stats.get("peak_bytes_in_use", current)), current,
                        int(stats.get("bytes_limit", 0)))
