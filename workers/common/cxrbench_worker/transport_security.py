"""How a worker listens: loopback by default; off loopback only with TLS and a bearer token.

A token travels as gRPC metadata `authorization: Bearer <token>` (what `grpc.access_token_call_credentials`
sends). Every Worker RPC without the right token is refused with UNAUTHENTICATED. The standard
health service stays open: it says only SERVING or not, and Docker's or Kubernetes' probes cannot
send a token.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import grpc

HEALTH_METHOD_PREFIX = "/grpc.health.v1.Health/"


@dataclass(frozen=True)
class ListenSecurity:
    """TLS key pair and token a worker serves with; each None when not given."""

    certificate: bytes | None = None
    private_key: bytes | None = None
    token: str | None = None

    @classmethod
    def from_files(cls, certificate: Path | None, private_key: Path | None, token_file: Path | None) -> ListenSecurity:
        """Read the files; ValueError names a missing or empty one, or a certificate without its key."""
        if (certificate is None) != (private_key is None):
            raise ValueError("TLS needs both a certificate (--tls-cert) and its private key (--tls-key)")
        token = None
        if token_file is not None:
            token = _read(token_file, "--token-file").decode().strip()
            if not token:
                raise ValueError(f"--token-file: {token_file} is empty")
        return cls(
            certificate=_read(certificate, "--tls-cert") if certificate else None,
            private_key=_read(private_key, "--tls-key") if private_key else None,
            token=token,
        )

    @property
    def tls(self) -> bool:
        return self.certificate is not None


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ValueError(f"{flag}: cannot read {path} ({error.strerror})") from None


def is_loopback(address: str) -> bool:
    """True for a Unix socket or a host of 127.0.0.0/8, ::1 or localhost; False for 0.0.0.0 or a name."""
    if address.startswith("unix:"):
        return True
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen_policy(address: str, security: ListenSecurity) -> None:
    """ValueError unless the address is loopback or TLS and a token are both configured."""
    if is_loopback(address) or (security.tls and security.token):
        return
    missing = [what for what, present in (("TLS (--tls-cert, --tls-key)", security.tls),
                                           ("a token (--token-file)", security.token)) if not present]
    raise ValueError(f"listening on {address}, off loopback, needs {' and '.join(missing)}; "
                     "or listen on 127.0.0.1 (the default)")


class TokenInterceptor(grpc.ServerInterceptor):
    """Refuses every call but health's with UNAUTHENTICATED unless it carries the bearer token."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(HEALTH_METHOD_PREFIX):
            return handler
        sent = dict(handler_call_details.invocation_metadata or ()).get("authorization")
        if sent is not None and hmac.compare_digest(sent.encode(), self._expected):
            return handler
        reason = "missing bearer token" if sent is None else "wrong token"
        return _refusal(handler, f"{reason}: this worker requires 'authorization: Bearer <token>'")


def _refusal(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that aborts with UNAUTHENTICATED."""

    def abort(request, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(handler.request_streaming, handler.response_streaming)]
    return make(abort, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


def add_port(server: grpc.Server, address: str, security: ListenSecurity) -> int:
    """Bind `address`, over TLS when a key pair is given; returns the port (0: could not bind)."""
    if security.tls:
        credentials = grpc.ssl_server_credentials([(security.private_key, security.certificate)])
        return server.add_secure_port(address, credentials)
    return server.add_insecure_port(address)
