"""The Ray executor's settings, from the command line (harness.config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

PLACEMENTS = ("any", "grouped", "exclusive")


class ClusterRefused(ValueError):
    """The cluster cannot run the study fairly as it is (exit status 2); says which node and why."""


@dataclass(frozen=True)
class ClusterSettings:
    """Where the cluster is and how a study's runs are placed on it."""

    address: str = "auto"  # "HOST:PORT", or "auto": a running cluster if one is found, else a Ray of our own
    placement: str = "any"  # see PLACEMENTS and --placement
    cpus_per_run: int = 1
    retries: int = 2  # a run lost with its worker or node is redone at most this many times
    allow_mixed_gpus: bool = False
    device: str = "cpu"  # what the preflight chose: the workers' device on every node
    threads: int = 0  # --threads: each worker's intra-op threads (0: its framework's default, all cores)
    interpreters: dict[str, Path] = field(default_factory=dict)  # --python, on every node
