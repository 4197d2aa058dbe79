"""The interface every runtime implements, and what it hands back for a started worker.

A runtime prepares every worker of a run before any training (environments made, images built,
engine and addresses checked), so a missing piece fails the run before its first epoch, then
starts one worker at a time: the benchmark trains workers in turn, each alone on the machine.
Runtimes import this module, never the one that selects them (`selection.py`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from harness.runtime.client import WorkerClient
from harness.runtime.registry import WorkerSpec


@dataclass
class RunningWorker:
    """A started worker: its client, and where it ran (recorded in run.json and the report)."""

    client: WorkerClient
    provenance: dict = field(default_factory=dict)  # runtime, and the env lock, image id or address


class Runtime(Protocol):
    """Where workers run: `local`, `docker` or `remote`."""

    name: str

    def use_device(self, device: str | None) -> None:
        """Run the workers on `device` ("cpu" or "cuda"; None: as each framework chooses), where the
        runtime decides it (local); ValueError where it cannot (docker has GPU images only)."""

    def prepare(self, specs: list[WorkerSpec]) -> None:
        """Everything each worker needs before the run starts; raises with what is missing."""

    def start(self, spec: WorkerSpec, log_path: Path) -> AbstractContextManager[RunningWorker]:
        """Start the worker and wait until it serves; stopped (and cleaned up) on exit."""

    def close(self) -> None:
        """Release what prepare() made for the run (e.g. its credentials)."""
