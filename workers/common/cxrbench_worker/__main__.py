"""Run a worker: `python -m cxrbench_worker --worker-dir workers/pytorch --address unix:///tmp/w.sock`.

Every flag has an environment variable (the flag wins): CXRBENCH_WORKER_DIR, CXRBENCH_WORKER_VARIANT,
CXRBENCH_ADDRESS, CXRBENCH_TLS_CERT, CXRBENCH_TLS_KEY, CXRBENCH_TOKEN_FILE; container images set them.
`--variant jax` runs the worker folder's `[variants.jax]` (its environment variables, such as
KERAS_BACKEND, are set before the backend is imported). The default address is 127.0.0.1; off
loopback the worker refuses to start without TLS and a token.

Health reports NOT_SERVING until the backend (and so the framework) has been imported, then
SERVING. The process exits on SIGTERM/SIGINT and, with --parent-pid, when that process dies, so a
crashed harness never leaves a worker behind.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from cxrbench.worker.v1 import worker_pb2_grpc
from cxrbench.worker.v1.tensors import SERVER_OPTIONS
from cxrbench_worker.servicer import WorkerServicer
from cxrbench_worker.transport_security import ListenSecurity, TokenInterceptor, add_port, check_listen_policy
from cxrbench_worker.worker_folder import WorkerFolder

SERVICE_NAME = "cxrbench.worker.v1.Worker"


def exit_with_parent(parent_pid: int) -> None:
    """Die when the parent dies: PR_SET_PDEATHSIG on Linux, and a polling thread everywhere."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except OSError:
        pass

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(3)
            time.sleep(0.5)

    if os.getppid() != parent_pid:
        os._exit(3)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


DEFAULT_ADDRESS = "127.0.0.1:50051"
PLAIN_LISTEN = ListenSecurity()  # no TLS, no token: loopback only (frozen, so one shared default is safe)


def serve(worker_dir: Path, address: str, parent_pid: int | None, security: ListenSecurity = PLAIN_LISTEN,
          variant: str | None = None) -> None:
    """Start the server, load the backend, report SERVING, block until told to stop."""
    check_listen_policy(address, security)
    if parent_pid:
        exit_with_parent(parent_pid)
    folder = WorkerFolder.read(worker_dir, variant=variant)
    interceptors = [TokenInterceptor(security.token)] if security.token else []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=list(SERVER_OPTIONS),
                         interceptors=interceptors)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    if add_port(server, address, security) == 0:
        raise SystemExit(f"worker {folder.label}: cannot listen on {address}")
    server.start()
    backend = folder.load_backend()  # imports the framework: seconds, hence after the server is up
    worker_pb2_grpc.add_WorkerServicer_to_server(WorkerServicer(folder.label, backend), server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    protection = (", ".join(what for what, on in (("TLS", security.tls), ("token", security.token)) if on)
                  or "no TLS, no token")
    print(f"worker {folder.label} serving on {address} ({protection}; pid {os.getpid()})", file=sys.stderr, flush=True)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    # Woken twice a second: Python runs a signal handler only when the main thread runs, and a
    # signal that reaches another thread (as a SIGTERM to a process continued after SIGSTOP does)
    # would leave a plain wait() blocked for good.
    while not stop.wait(0.5):
        pass
    health_servicer.enter_graceful_shutdown()
    server.stop(grace=2).wait()


def _from_environment(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cxrbench_worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker-dir", type=Path, default=_from_environment("CXRBENCH_WORKER_DIR"),
                        help="the worker folder, e.g. workers/pytorch ($CXRBENCH_WORKER_DIR)")
    parser.add_argument("--variant", default=os.environ.get("CXRBENCH_WORKER_VARIANT") or None,
                        help="the folder's variant to run, e.g. jax for [variants.jax] ($CXRBENCH_WORKER_VARIANT; "
                        "default: none)")
    parser.add_argument("--address", default=os.environ.get("CXRBENCH_ADDRESS") or DEFAULT_ADDRESS,
                        help=f"unix:///path.sock or HOST:PORT ($CXRBENCH_ADDRESS; default {DEFAULT_ADDRESS})")
    parser.add_argument("--tls-cert", type=Path, default=_from_environment("CXRBENCH_TLS_CERT"),
                        help="PEM certificate (chain) to serve TLS with ($CXRBENCH_TLS_CERT)")
    parser.add_argument("--tls-key", type=Path, default=_from_environment("CXRBENCH_TLS_KEY"),
                        help="PEM private key of --tls-cert ($CXRBENCH_TLS_KEY)")
    parser.add_argument("--token-file", type=Path, default=_from_environment("CXRBENCH_TOKEN_FILE"),
                        help="file holding the bearer token every call must carry ($CXRBENCH_TOKEN_FILE)")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process dies")
    args = parser.parse_args(argv)
    if args.worker_dir is None:
        parser.error("--worker-dir (or $CXRBENCH_WORKER_DIR) is required")
    try:
        security = ListenSecurity.from_files(args.tls_cert, args.tls_key, args.token_file)
        check_listen_policy(args.address, security)
        WorkerFolder.read(args.worker_dir, variant=args.variant or None)  # an unknown variant: said here
    except ValueError as error:
        parser.exit(2, f"worker: error: {error}\n")
    serve(args.worker_dir.resolve(), args.address, args.parent_pid, security, args.variant or None)


if __name__ == "__main__":
    main()
