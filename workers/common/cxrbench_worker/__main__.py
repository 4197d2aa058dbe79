"""Run a worker: `python -m cxrbench_worker --worker-dir workers/pytorch --address unix:///tmp/w.sock`.

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
from cxrbench.worker.v1.tensors import GRPC_OPTIONS
from cxrbench_worker.servicer import WorkerServicer
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


def serve(worker_dir: Path, address: str, parent_pid: int | None) -> None:
    """Start the server, load the backend, report SERVING, block until told to stop."""
    if parent_pid:
        exit_with_parent(parent_pid)
    folder = WorkerFolder.read(worker_dir)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=list(GRPC_OPTIONS))
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    if server.add_insecure_port(address) == 0:
        raise SystemExit(f"worker {folder.name}: cannot listen on {address}")
    server.start()
    backend = folder.load_backend()  # imports the framework: seconds, hence after the server is up
    worker_pb2_grpc.add_WorkerServicer_to_server(WorkerServicer(folder.name, backend), server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    print(f"worker {folder.name} serving on {address} (pid {os.getpid()})", file=sys.stderr, flush=True)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    health_servicer.enter_graceful_shutdown()
    server.stop(grace=2).wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cxrbench_worker", description=__doc__)
    parser.add_argument("--worker-dir", type=Path, required=True, help="the worker folder, e.g. workers/pytorch")
    parser.add_argument("--address", required=True, help="unix:///path.sock or 127.0.0.1:PORT")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process dies")
    args = parser.parse_args(argv)
    serve(args.worker_dir.resolve(), args.address, args.parent_pid)


if __name__ == "__main__":
    main()
