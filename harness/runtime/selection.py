"""`--runtime`: the runtime a run asked for, by name, with what it needs to reach its workers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.runtime.base import Runtime

RUNTIMES = ("local", "docker", "remote", "ray")


@dataclass(frozen=True)
class RuntimeChoice:
    """The runtime options of a run: its name and, for `remote`, the addresses and credentials."""

    name: str = "local"
    remote_workers: tuple[str, ...] = ()  # "NAME=HOST:PORT" per worker
    tls_ca: str | None = None  # PEM trust roots for the workers' TLS
    token_file: str | None = None  # file holding the bearer token
    interpreters: dict[str, Path] = field(default_factory=dict)  # local: worker label -> existing interpreter


def runtime_for(choice: RuntimeChoice, cache: Path) -> Runtime:
    """The runtime `choice.name` names; ValueError naming --runtime for an unknown one."""
    if choice.name == "docker":
        from harness.runtime.docker import DockerRuntime

        return DockerRuntime(secrets_root=cache / "secrets")
    if choice.name == "remote":
        from harness.runtime.remote import RemoteRuntime

        return RemoteRuntime.from_files(choice.remote_workers, choice.tls_ca, choice.token_file)
    if choice.name in ("local", "ray"):  # ray: the driver's own steps (preflight, parity) run here, locally
        from harness.runtime.local import LocalRuntime

        return LocalRuntime(cache, choice.interpreters)
    raise ValueError(f"--runtime: unknown {choice.name!r} (known: {', '.join(RUNTIMES)})")
