"""Keras on torch: the switches the PyTorch worker sets, set and reported alike.

Keras's torch backend runs every op on torch's default device ("cuda" when torch sees a GPU, else the
CPU), so TF32, determinism and threads are torch's process-wide flags. cuBLAS's workspace setting,
which deterministic matmuls on CUDA need, is in worker.toml's [variants.torch] environment: it must
be set before torch (imported by Keras) creates its first cuBLAS handle.
"""

from __future__ import annotations

import torch

from cxrbench_worker import torch_settings
from cxrbench_worker.backend import DeviceMemory

# Keras's own "auto" on torch is eager; jit_compile=true runs the steps through torch.compile.
JIT_COMPILE_DEFAULT = False


def _flag(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def prepare() -> None:
    """Nothing to do before torch starts: its flags can be set at any time."""


def jit_conflict(jit_compile: bool, deterministic: bool) -> str | None:
    """None: torch.compile honours torch.use_deterministic_algorithms."""
    return None


def set_threads(threads: int) -> None:
    """torch's intra-op threads (0 keeps torch's default), as the PyTorch worker sets them."""
    if threads > 0:
        torch.set_num_threads(threads)


def set_numerics(allow_tf32: bool, deterministic: bool) -> dict[str, str]:
    """TF32 for matmuls and cuDNN convolutions (cuDNN's defaults to on: both are always set) and
    deterministic algorithms, exactly as the PyTorch worker sets them."""
    torch_settings.set_numerics(allow_tf32, deterministic)
    return {}


def numerics_flags() -> dict[str, str]:
    """torch's flags as it has them now, under the PyTorch worker's keys."""
    deterministic = _flag(torch.are_deterministic_algorithms_enabled())
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    return {
        "allow_tf32": _flag(matmul) if matmul == cudnn else f"matmul {_flag(matmul)}, cudnn {_flag(cudnn)}",
        "allow_tf32_matmul": _flag(matmul),
        "allow_tf32_cudnn": _flag(cudnn),
        "deterministic": deterministic,
        "deterministic_algorithms": deterministic,
        "cudnn_benchmark": _flag(torch.backends.cudnn.benchmark),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        # torch's caching allocator takes GPU memory as tensors need it, as TF's memory growth does.
        "gpu_memory_growth": "true (torch's caching allocator)" if torch.cuda.is_available() else "n/a (no GPU)",
    }


def thread_count() -> int:
    """torch's intra-op threads."""
    return torch.get_num_threads()


def versions_and_device() -> tuple[dict[str, str], str | None]:
    """torch's version (and its CUDA and cuDNN when it runs on a GPU), and the GPU Keras computes on."""
    versions = {"torch": torch.__version__}
    if not torch.cuda.is_available():
        return versions, None
    versions.update(cuda=str(torch.version.cuda), cudnn=str(torch.backends.cudnn.version()))
    return versions, f"cuda:{torch.cuda.current_device()} ({torch.cuda.get_device_name()})"


def synchronize() -> None:
    """torch.cuda.synchronize on a GPU (kernels return once queued); nothing on a CPU."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def device_memory(reset_peak: bool, started: bool) -> DeviceMemory:
    """What torch's CUDA caching allocator handed out to tensors; nothing on a CPU."""
    if not torch.cuda.is_available():
        return DeviceMemory()
    index = torch.cuda.current_device()
    memory = DeviceMemory(f"cuda:{index} ({torch.cuda.get_device_name(index)})", True,
                          torch.cuda.max_memory_allocated(index), torch.cuda.memory_allocated(index),
                          torch.cuda.get_device_properties(index).total_memory)
    if reset_peak:
        torch.cuda.reset_peak_memory_stats(index)
    return memory
