"""A torchvision ImageNet checkpoint the user has, converted once into the neutral format.

The backbone comes from the checkpoint; the 1000-class ImageNet head is replaced by the run's
`num_labels`-logit head, initialised by the harness from the run seed like any other start. The
converted backbone is cached by the checkpoint's SHA-256, so a 100 MB file is converted only once.
Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

from cxrbench_worker.neutral_weights import weights_from_bytes, weights_to_bytes
from harness.models.architectures import Architecture
from harness.models.weights.initial import initial_tensor
from harness.models.weights.torch_checkpoint import read_torch_checkpoint

_SKIPPED_SUFFIX = "num_batches_tracked"  # BatchNorm's counter is not part of the neutral format
_LISTED = 5
# Checkpoints saved before torchvision 0.3 spell DenseNet's layers "norm.1" where the model has
# "norm1"; torchvision renames them on load with this pattern, and so does the harness.
_OLD_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 8 MB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for piece in iter(lambda: handle.read(8 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def _listed(items: list[str]) -> str:
    more = f" (and {len(items) - _LISTED} more)" if len(items) > _LISTED else ""
    return ", ".join(items[:_LISTED]) + more


def backbone_from_checkpoint(path: Path, arch: Architecture) -> dict[str, np.ndarray]:
    """The checkpoint's tensors for every non-head tensor of `arch`, float32, checked by name and shape.

    ValueError names the file and the missing, unexpected or misshapen tensors (a DenseNet file
    given for ResNet-50 fails here, not inside a worker).
    """
    renamed = {_OLD_DENSENET_KEY.sub(r"\1\2", name): array for name, array in read_torch_checkpoint(path).items()}
    found = {name: array for name, array in renamed.items()
             if not name.endswith(_SKIPPED_SUFFIX) and not name.startswith(f"{arch.head}.")}
    expected = {spec.name: spec.shape for spec in arch.tensors if not spec.name.startswith(f"{arch.head}.")}
    problems = []
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshapen = [f"{name} is {tuple(found[name].shape)}, expected {expected[name]}"
                 for name in sorted(set(expected) & set(found)) if tuple(found[name].shape) != expected[name]]
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen)):
        if items:
            problems.append(f"{len(items)} {label}: {_listed(items)}")
    if problems:
        raise ValueError(f"--init imagenet={path}: not a torchvision {arch.name} checkpoint: " + "; ".join(problems))
    return {name: np.ascontiguousarray(found[name], dtype=np.float32) for name in expected}


def imagenet_weights(path: Path, arch: Architecture, seed: int, cache: Path) -> tuple[dict[str, np.ndarray], str]:
    """Neutral weights starting from the checkpoint at `path`, and the checkpoint's SHA-256.

    The converted backbone is kept under `cache/weights/` (written atomically) and reused.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--init imagenet={path}: no such file (the harness never downloads weights)")
    checksum = file_sha256(path)
    cached = cache / "weights" / f"{arch.name}-imagenet-{checksum[:24]}.safetensors"
    if cached.is_file():
        backbone = weights_from_bytes(cached.read_bytes())
    else:
        backbone = backbone_from_checkpoint(path, arch)
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f".{cached.name}.{os.getpid()}.partial")
        partial.write_bytes(weights_to_bytes(backbone))
        os.replace(partial, cached)
    head = {spec.name: initial_tensor(spec, arch, seed)
            for spec in arch.tensors if spec.name.startswith(f"{arch.head}.")}
    return {**backbone, **head}, checksum
