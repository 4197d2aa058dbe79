"""The three runtimes behind one interface: `local` (venvs), `docker` (compose), `remote` (addresses).

A runtime prepares every worker of a run before any training (environments made, images built,
engine and addresses checked), so a missing piece fails the run before its first epoch, then
starts one worker at a time: the benchmark trains workers in turn, each alone on the machine.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from harness.client import WorkerClient
from harness.config import BenchmarkConfig
from harness.registry import WorkerSpec, resolve_workers


@dataclass
class RunningWorker:
    """A started worker: its client, and where it ran (recorded in run.json and the report)."""

    client: WorkerClient
    provenance: dict = field(default_factory=dict)  # runtime, and the env lock, image id or address


class Runtime(Protocol):
    name: str

    def prepare(self, specs: list[WorkerSpec]) -> None:
        """Everything each worker needs before the run starts; raises with what is missing."""

    def start(self, spec: WorkerSpec, log_path: Path) -> AbstractContextManager[RunningWorker]:
        """Start the worker and wait until it serves; stopped (and cleaned up) on exit."""

    def close(self) -> None:
        """Release what prepare() made for the run (e.g. its credentials)."""


def selected_workers(config: BenchmarkConfig) -> list[WorkerSpec]:
    """The run's workers: --workers, where "all" under --runtime remote means the --worker names.

    ValueError when an --option names a worker that is not among them.
    """
    selection = config.workers
    if config.runtime == "remote" and selection == "all":
        selection = ",".join(entry.partition("=")[0] for entry in config.remote_workers)
    workers = resolve_workers(selection)
    config.check_option_targets([spec.label for spec in workers])
    return workers


def runtime_for(config: BenchmarkConfig, cache: Path) -> Runtime:
    """The runtime `config.runtime` names (already validated by BenchmarkConfig)."""
    if config.runtime == "docker":
        from harness.runtime.docker import DockerRuntime

        return DockerRuntime(secrets_root=cache / "secrets")
    if config.runtime == "remote":
        from harness.runtime.remote import RemoteRuntime

        return RemoteRuntime.from_config(config)
    from harness.runtime.local import LocalRuntime

    return LocalRuntime(cache)
