"""Container health check: exit 0 when this container's worker reports SERVING, else 1.

`python -m cxrbench_worker.health_probe` (Docker's HEALTHCHECK and compose's healthcheck) reads the
port from CXRBENCH_ADDRESS and asks grpc.health.v1 on 127.0.0.1, over TLS when CXRBENCH_TLS_CERT is
set (that self-signed certificate is its own trust root). Health needs no token.
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TLS_SERVER_NAME = "localhost"  # a name every certificate made by `harness credentials` carries


def probe(address: str, certificate: bytes | None, timeout: float = 3.0) -> bool:
    """True when the health service at `address` answers SERVING within `timeout` seconds."""
    if certificate is not None:
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=certificate),
                                      options=[("grpc.ssl_target_name_override", TLS_SERVER_NAME)])
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""),
                                                              timeout=timeout)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def main() -> int:
    port = os.environ.get("CXRBENCH_ADDRESS", "127.0.0.1:50051").rsplit(":", 1)[1]
    certificate_path = os.environ.get("CXRBENCH_TLS_CERT")
    certificate = open(certificate_path, "rb").read() if certificate_path else None
    return 0 if probe(f"127.0.0.1:{port}", certificate) else 1


if __name__ == "__main__":
    sys.exit(main())
