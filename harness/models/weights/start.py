"""The one starting point of a run: neutral weights made by the harness, loaded by every worker."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cxrbench_worker.neutral_weights import sha256_hex, weights_to_bytes
from harness.models.architectures import architecture
from harness.models.weights.imagenet import imagenet_weights
from harness.models.weights.initial import initial_weights


@dataclass(frozen=True)
class StartingWeights:
    """A neutral safetensors file and where it came from."""

    data: bytes
    sha256: str
    source: dict  # plain values for run.json: scheme, seed, checkpoint path and digest

    def describe(self) -> str:
        """One line for reports."""
        if self.source["scheme"] == "imagenet":
            return (f"ImageNet backbone from {self.source['checkpoint']} "
                    f"(sha256 {self.source['checkpoint_sha256'][:16]}...), "
                    f"head drawn by the harness with seed {self.source['seed']}")
        return f"torchvision's initialisation scheme, drawn by the harness with seed {self.source['seed']}"


def starting_weights(init: str, arch_name: str, num_labels: int, seed: int, cache: Path) -> StartingWeights:
    """Make the run's initial weights from `init` ("random" or "imagenet=PATH")."""
    arch = architecture(arch_name, num_labels)
    if init == "random":
        tensors = initial_weights(arch, seed)
        source = {"scheme": "torchvision-init", "seed": seed}
    else:
        path = Path(init.removeprefix("imagenet=")).expanduser()
        tensors, checksum = imagenet_weights(path, arch, seed, cache)
        source = {"scheme": "imagenet", "seed": seed, "checkpoint": str(path), "checkpoint_sha256": checksum}
    data = weights_to_bytes(tensors)
    return StartingWeights(data, sha256_hex(data), {**source, "architecture": arch_name, "tensors": len(tensors)})
