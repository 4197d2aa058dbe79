"""The remote runtime: workers someone started elsewhere, reached at `--worker NAME=HOST:PORT`.

On each host: `python -m cxrbench_worker --worker-dir workers/keras --address 0.0.0.0:50051
--tls-cert tls.crt --tls-key tls.key --token-file token` (files from `harness credentials`). Off
loopback the harness, like the worker, insists on TLS and a token: the token travels only inside TLS.

A host that goes down or a link that goes half-open mid-call is found by keepalive pings (both ends,
tensors.CLIENT_OPTIONS / SERVER_OPTIONS) within about 40 s; a worker that answers pings but not
batches, by the client's stream watchdog.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cxrbench_worker.transport_security import is_loopback
from harness.runtime.base import RunningWorker
from harness.runtime.client import ChannelSecurity, WorkerClient, wait_until_serving
from harness.runtime.registry import WorkerSpec

CONNECT_TIMEOUT_SECONDS = 30.0
TOKEN_VARIABLE = "CXRBENCH_TOKEN"  # the token itself, for when a file is unwelcome


def parse_worker_addresses(entries: tuple[str, ...] | list[str]) -> dict[str, str]:
    """{"keras": "gpu1:50051"} from ["keras=gpu1:50051"]; ValueError naming the entry at fault."""
    addresses: dict[str, str] = {}
    for entry in entries:
        name, equals, address = entry.partition("=")
        host, colon, port = address.rpartition(":")
        if not (equals and name and colon and host and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"--worker: {entry!r} must look like NAME=HOST:PORT, e.g. keras=gpu1.example.org:50051")
        if name in addresses:
            raise ValueError(f"--worker: '{name}' is given two addresses ({addresses[name]} and {address})")
        addresses[name] = address
    return addresses


@dataclass
class RemoteRuntime:
    """Connects to running workers; starts and stops nothing."""

    addresses: dict[str, str]  # worker label -> HOST:PORT
    root_certificates: bytes | None
    token: str | None
    name: str = "remote"

    @classmethod
    def from_files(cls, workers: tuple[str, ...], tls_ca: str | None, token_file: str | None) -> RemoteRuntime:
        """Read --worker, --tls-ca and --token-file (or $CXRBENCH_TOKEN); ValueError naming the flag."""
        roots = None
        if tls_ca is not None:
            try:
                roots = Path(tls_ca).expanduser().read_bytes()
            except OSError as error:
                raise ValueError(f"--tls-ca: cannot read {tls_ca} ({error.strerror})") from None
        token = os.environ.get(TOKEN_VARIABLE) or None
        if token_file is not None:
            try:
                token = Path(token_file).expanduser().read_text().strip()
            except OSError as error:
                raise ValueError(f"--token-file: cannot read {token_file} ({error.strerror})") from None
            if not token:
                raise ValueError(f"--token-file: {token_file} is empty")
        return cls(parse_worker_addresses(workers), roots, token)

    def security_for(self, address: str) -> ChannelSecurity:
        """TLS whenever roots are given or the host is off loopback; the token only ever with TLS."""
        tls = self.root_certificates is not None or not is_loopback(address)
        if not tls and self.token is not None:
            raise ValueError(f"--worker: {address} is on loopback without --tls-ca; a token is sent only over TLS")
        if tls and self.token is None:
            raise ValueError(f"--worker: {address} needs a token (--token-file or ${TOKEN_VARIABLE}): "
                             "workers off loopback refuse calls without one")
        return ChannelSecurity(tls=tls, root_certificates=self.root_certificates, token=self.token)

    def use_device(self, device: str | None) -> None:
        """Remote workers run where they run: the preflight checks what they report against `device`."""

    def prepare(self, specs: list[WorkerSpec]) -> None:
        """Every worker of the run has an address, and every address a worker of the run."""
        labels = [spec.label for spec in specs]
        missing = [label for label in labels if label not in self.addresses]
        if missing:
            raise ValueError(f"--worker: no address for {', '.join(missing)} (give --worker NAME=HOST:PORT for each)")
        extra = [name for name in self.addresses if name not in labels]
        if extra:
            raise ValueError(f"--worker: {', '.join(extra)} given an address but not in --workers "
                             f"({', '.join(labels)})")
        for address in self.addresses.values():
            self.security_for(address)

    def close(self) -> None:
        """Nothing to release: the workers belong to whoever started them."""

    @contextmanager
    def start(self, spec: WorkerSpec, log_path: Path) -> Iterator[RunningWorker]:
        address = self.addresses[spec.label]
        security = self.security_for(address)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(f"remote worker at {address}; its log is on that host\n")
        client = WorkerClient(spec.label, address, security=security)
        try:
            wait_until_serving(client, CONNECT_TIMEOUT_SECONDS, lambda: None)
            yield RunningWorker(client, {"runtime": self.name, "address": address, "tls": security.tls,
                                         "token": security.token is not None})
        finally:
            client.close()
