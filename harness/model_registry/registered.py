"""A registered model as the rest of the harness sees it: its card and its files on this machine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RegisteredModel:
    """One version of a registered model, its artifacts downloaded (or read in place) locally.

    `card` is the model card (see `harness.model_registry.cards`): the worker label that serves it,
    architecture, image size, labels, validation thresholds, weights SHA-256, test metrics, provenance.
    """

    name: str
    version: int
    aliases: tuple[str, ...]
    card: dict
    weights: Path  # the neutral model.safetensors
    native: Path | None = None  # the framework's own export, a .tar archive

    def reference(self) -> str:
        """`name@alias` (its first alias) when it has one, else `name/version`."""
        return f"{self.name}@{self.aliases[0]}" if self.aliases else f"{self.name}/{self.version}"
