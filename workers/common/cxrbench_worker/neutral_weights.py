"""Neutral weights: one safetensors file, torchvision's parameter names and layouts, float32.

Every worker reads and writes this format, so weights made by one framework load into any other.
"""

from __future__ import annotations

import hashlib

import numpy as np
from safetensors.numpy import load as _load_safetensors
from safetensors.numpy import save as _save_safetensors

FORMAT_TAG = "cxrbench-neutral-weights-v1"


def weights_to_bytes(tensors: dict[str, np.ndarray]) -> bytes:
    """Serialize named arrays as a safetensors file (keys sorted, so the bytes are reproducible)."""
    ordered = {name: np.ascontiguousarray(tensors[name]) for name in sorted(tensors)}
    return _save_safetensors(ordered, metadata={"format": FORMAT_TAG})


def weights_from_bytes(data: bytes) -> dict[str, np.ndarray]:
    """Parse a safetensors file; raises ValueError when the bytes are not one."""
    try:
        return _load_safetensors(data)
    except Exception as error:  # safetensors raises its own error types
        raise ValueError(f"weights: not a readable safetensors file ({error})") from None


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of a byte string."""
    return hashlib.sha256(data).hexdigest()


_LISTED = 5  # how many offending names an error quotes per category


def check_tensors(expected: dict[str, tuple[int, ...]], tensors: dict[str, np.ndarray]) -> None:
    """ValueError naming missing, unexpected and misshapen tensors, if any (every backend's import check)."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    misshapen = [
        f"{name}: expected {tuple(expected[name])} got {tuple(np.shape(tensors[name]))}"
        for name in sorted(set(expected) & set(tensors))
        if tuple(np.shape(tensors[name])) != tuple(expected[name])
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen)):
        if items:
            more = f" (and {len(items) - _LISTED} more)" if len(items) > _LISTED else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:_LISTED])}{more}")
    if problems:
        raise ValueError("weights do not match the model: " + "; ".join(problems))
