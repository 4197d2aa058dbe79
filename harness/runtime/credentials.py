"""TLS certificate, key and bearer token for workers that listen off loopback.

`make_credentials` writes `tls.crt` (self-signed, and so its own trust root), `tls.key` and `token`
into a folder. The docker runtime makes a fresh set per run and mounts it as compose secrets;
`harness credentials --out DIR --host gpu1.example.org` makes one for workers on other hosts.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ALWAYS_NAMES = ("localhost", "127.0.0.1", "::1")  # health probes and published ports use these
VALID_DAYS = 365


@dataclass(frozen=True)
class Credentials:
    """Where a set of credentials lives."""

    folder: Path

    @property
    def certificate(self) -> Path:
        return self.folder / "tls.crt"

    @property
    def private_key(self) -> Path:
        return self.folder / "tls.key"

    @property
    def token(self) -> Path:
        return self.folder / "token"


def _subject_names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*ALWAYS_NAMES, *hosts]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def make_credentials(folder: Path, hosts: Sequence[str] = ()) -> Credentials:
    """Write a self-signed certificate for `hosts` (plus localhost), its key and a random token.

    Files are readable by all (0644) so a container's non-root user can read its bind-mounted
    secrets; the folder itself is private (0700), which is what keeps them from other users.
    """
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cxrbench worker")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(_subject_names(list(hosts))), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    made = Credentials(folder)
    _write(made.certificate, certificate.public_bytes(serialization.Encoding.PEM))
    _write(made.private_key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    _write(made.token, (secrets.token_urlsafe(32) + "\n").encode())
    return made


def _write(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    path.chmod(0o644)  # whatever the umask: a container's user must read its bind-mounted secrets
