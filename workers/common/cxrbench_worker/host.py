"""Facts about the machine a process runs on, named the same way by every worker and the harness."""

from __future__ import annotations

import ctypes
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cuda_driver() -> ctypes.CDLL | None:
    """The CUDA driver (`libcuda.so.1`), initialised; None where there is none or it will not start.
    Its calls return CUDA_SUCCESS (0) or an error code; cuInit is harmless when done already."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    return driver if driver.cuInit(0) == 0 else None


def cuda_total_memory(ordinal: int = 0) -> int:
    """Total memory of CUDA device `ordinal` (as CUDA_VISIBLE_DEVICES numbers them), in bytes, from
    the driver; 0 when no CUDA driver answers. For frameworks that do not say it (TensorFlow)."""
    driver = cuda_driver()
    device, total = ctypes.c_int(), ctypes.c_size_t()
    if (driver is None or driver.cuDeviceGet(ctypes.byref(device), ordinal) != 0
            or driver.cuDeviceTotalMem_v2(ctypes.byref(total), device) != 0):
        return 0
    return int(total.value)


def cuda_device_count() -> int:
    """CUDA devices this process may use (CUDA_VISIBLE_DEVICES applies), from the driver; 0 when no
    CUDA driver answers. Needs no framework, so the harness can ask it before any worker starts."""
    driver = cuda_driver()
    count = ctypes.c_int()
    if driver is None or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return int(count.value)


def cuda_device_names() -> list[str]:
    """The model of each CUDA device this process may use ("NVIDIA H200"), from the driver; [] when
    no CUDA driver answers (a CPU node, or a Ray node whose GPUs are only declared)."""
    driver = cuda_driver()
    names = []
    for ordinal in range(cuda_device_count()):
        device, name = ctypes.c_int(), ctypes.create_string_buffer(256)
        if driver is None or driver.cuDeviceGet(ctypes.byref(device), ordinal) != 0 \
                or driver.cuDeviceGetName(name, len(name), device) != 0:
            continue
        names.append(name.value.decode(errors="replace"))
    return names
