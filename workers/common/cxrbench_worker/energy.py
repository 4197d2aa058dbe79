"""The energy the GPU a worker computes on has used, from NVML's cumulative counter.

NVML is read through ctypes from the driver's own `libnvidia-ml.so.1`, not through nvidia-ml-py:
that library ships with every NVIDIA driver (wherever a GPU can compute, it is there), so no
worker's pinned requirements or locks change for it and a machine without a driver simply has no
library to load. The four calls needed (nvmlInit_v2, a handle by UUID or index,
nvmlDeviceGetTotalEnergyConsumption, nvmlShutdown) are a stable C interface; host.py reads the CUDA
driver the same way.

The counter is the whole GPU's, in millijoules since the driver was loaded (Volta and newer): the
harness takes differences around each epoch, so it measures the worker only while no other process
uses the same GPU. Every failure (no library, no GPU, the counter not supported, e.g. on a MIG slice
or an older GPU) gives None: an energy reading never fails an RPC.
"""

from __future__ import annotations

import ctypes
import os

from cxrbench_worker.host import cuda_driver

_NVML_SUCCESS = 0


def cuda_device_uuid(ordinal: int = 0) -> str | None:
    """"GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" of CUDA device `ordinal` as this process numbers it
    (after CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER), from the CUDA driver; None without one.

    CUDA's numbering and NVML's indices differ on hosts with unlike GPUs (CUDA puts the fastest
    first, NVML goes by PCI bus), so the UUID is how the two name the same device."""
    driver = cuda_driver()
    if driver is None:
        return None
    device, uuid = ctypes.c_int(), (ctypes.c_ubyte * 16)()
    try:
        if (driver.cuDeviceGet(ctypes.byref(device), ordinal) != 0
                or driver.cuDeviceGetUuid(ctypes.byref(uuid), device) != 0):
            return None
    except AttributeError:  # a driver older than cuDeviceGetUuid (CUDA 9.2)
        return None
    text = bytes(uuid).hex()
    return f"GPU-{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def nvml_device_name(uuid: str | None = None) -> str:
    """How NVML is asked for the device: `uuid` when the backend knows it (torch's
    get_device_properties(i).uuid, with or without the "GPU-" prefix), else the CUDA driver's device 0,
    else the first entry of CUDA_VISIBLE_DEVICES (an index or a UUID), else index "0"."""
    if uuid:
        uuid = str(uuid)
        return uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
    found = cuda_device_uuid(0)
    if found:
        return found
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return visible or "0"


def gpu_energy_joules(uuid: str | None = None) -> float | None:
    """The GPU's cumulative energy counter in joules (see the module docstring for which GPU), or
    None where it cannot be read."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
        if nvml.nvmlInit_v2() != _NVML_SUCCESS:
            return None
    except (OSError, AttributeError):  # no driver library; one too old to have nvmlInit_v2
        return None
    try:
        return _read_counter(nvml, nvml_device_name(uuid))
    except (AttributeError, ValueError, UnicodeError):  # a function the driver lacks; a malformed name
        return None
    finally:
        nvml.nvmlShutdown()  # NVML counts initialisations: each reading undoes its own


def _read_counter(nvml: ctypes.CDLL, name: str) -> float | None:
    """The energy counter of the device `name` (an NVML index or a UUID), joules."""
    handle, millijoules = ctypes.c_void_p(), ctypes.c_ulonglong()
    if name.isdigit():
        found = nvml.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(int(name)), ctypes.byref(handle))
    else:
        found = nvml.nvmlDeviceGetHandleByUUID(name.encode("ascii"), ctypes.byref(handle))
    if found != _NVML_SUCCESS:
        return None
    if nvml.nvmlDeviceGetTotalEnergyConsumption(handle, ctypes.byref(millijoules)) != _NVML_SUCCESS:
        return None
    return millijoules.value / 1000.0
