"""No call waits for ever: the stream watchdog's limit, deadlines on unary and weight calls, and
keepalive that finds a stopped worker and is not mistaken by the worker for abuse.

Workers are served in-process here (a servicer that stalls on demand); the end-to-end case, a
SIGSTOPped worker in a benchmark run, is in test_run_failures.py.
"""

from __future__ import annotations

import os
import re
import signal
import tempfile
import threading
from collections import deque
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest

import harness.runtime.client as client_module
from cxrbench.worker.v1 import worker_pb2, worker_pb2_grpc
from cxrbench.worker.v1.tensors import GRPC_OPTIONS, keepalive_options, make_batch, ping_policy_options
from harness.runtime.client import WorkerClient, WorkerError, weights_deadline
from harness.runtime.stream_watchdog import StreamWatchdog, describe_limit, stall_limit


def test_the_limit_is_the_floor_until_twenty_median_steps_exceed_it():
    assert stall_limit(120.0, []) == 120.0
    assert stall_limit(120.0, [0.2, 0.3, 5.0]) == 120.0  # 20 x 0.3 = 6 s: the floor wins
    assert stall_limit(5.0, [1.0, 9.0, 2.0, 100.0]) == 20 * 5.5  # the median of 1, 2, 9, 100 is 5.5
    assert stall_limit(5.0, [10.0]) == 200.0


def test_the_limit_is_described_as_it_was_computed():
    assert describe_limit(5.0, [0.2, 0.21, 0.25]) == "max(5 s, 20 x median step 0.21 s)"
    assert describe_limit(120.0, []) == "the floor, no step timed yet"


def test_the_first_reply_of_a_stream_is_not_a_step():
    steps: deque[float] = deque()
    cancelled = threading.Event()
    watchdog = StreamWatchdog(60.0, steps, cancel=cancelled.set)
    try:
        for index in range(3):
            watchdog.sent()
            watchdog.answered(index)
    finally:
        watchdog.stop()
    assert len(steps) == 3 - 1  # the first reply also starts the stream (and may compile)
    assert watchdog.stalled is None and not cancelled.is_set()


def test_time_without_a_batch_outstanding_is_not_the_workers():
    cancelled = threading.Event()
    watchdog = StreamWatchdog(0.05, deque(), cancel=cancelled.set)  # the harness is slow to build batches
    try:
        watchdog.sent()
        watchdog.answered(0)
        assert not cancelled.wait(0.5)
    finally:
        watchdog.stop()
    assert watchdog.stalled is None


class StallingWorker(worker_pb2_grpc.WorkerServicer):
    """Answers `answer` Train batches, then waits until released; stalls unary calls on demand."""

    def __init__(self) -> None:
        self.answer = 3
        self.release = threading.Event()

    def Train(self, request_iterator, context):
        for count, request in enumerate(request_iterator):
            if count == self.answer:
                self.release.wait()
                return
            yield worker_pb2.TrainResponse(index=request.batch.index, digest=request.batch.digest, loss=0.5)

    def Configure(self, request, context):
        self.release.wait()
        return worker_pb2.ConfigureResponse()

    def GetWeights(self, request, context):
        self.release.wait()
        yield from ()


def _serve(servicer, options=()) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=list(options))
    worker_pb2_grpc.add_WorkerServicer_to_server(servicer, server)
    address = f"unix://{Path(tempfile.mkdtemp(prefix='cxrbench-test-')) / 'w.sock'}"
    server.add_insecure_port(address)
    server.start()
    return server, address


@pytest.fixture
def stalling():
    servicer = StallingWorker()
    server, address = _serve(servicer)
    client = WorkerClient("stuck", address, stall_timeout=0.5)
    yield servicer, client
    servicer.release.set()
    client.close()
    server.stop(None)


def batches(count: int):
    for index in range(count):
        yield make_batch(index, np.full((2, 32, 32), index, np.uint8), np.zeros((2, 14), np.uint8))


def test_a_stream_that_stops_answering_is_cancelled_naming_the_last_batch_answered(stalling):
    servicer, client = stalling
    answered = []
    before = set(threading.enumerate())
    with pytest.raises(WorkerError) as caught:
        for step in client.train(batches(10)):
            answered.append(step.index)
    error = caught.value
    assert (error.worker, error.rpc, error.code) == ("stuck", "Train", "STALLED")
    assert answered == [0, 1, 2]
    # How long it waited depends on when the watchdog looked (a loaded machine: 0.6 s); the limit does not.
    assert re.search(r"no reply for 0\.[5-9] s \(limit 0\.5 s = max\(0\.5 s, 20 x median step", str(error))
    assert "last batch answered: 2 (3 of the " in str(error)
    # The watchdog's thread and gRPC's request thread end with the stream (the server's pool stays).
    assert wait_until(lambda: not [t.name for t in set(threading.enumerate()) - before
                                   if not t.name.startswith("ThreadPoolExecutor")])


def wait_until(condition, seconds: float = 5.0) -> bool:
    done = threading.Event()
    for _ in range(int(seconds / 0.05)):
        if condition():
            return True
        done.wait(0.05)
    return condition()


def test_a_stream_stalled_before_its_first_reply_waits_for_the_floor_alone(stalling):
    servicer, client = stalling
    servicer.answer = 0
    with pytest.raises(WorkerError, match=r"Train: STALLED: no reply for 0.5 s \(limit 0.5 s = the floor, no step timed yet\); "
                                          r"no batch answered yet \(\d+ sent\)"):
        list(client.train(batches(4)))


def test_a_stalled_unary_call_fails_at_its_deadline_naming_worker_and_call(stalling, monkeypatch):
    _, client = stalling
    monkeypatch.setattr(client_module, "CONFIGURE_DEADLINE_SECONDS", 0.3)
    with pytest.raises(WorkerError) as caught:
        client.configure(worker_pb2.ConfigureRequest())
    assert str(caught.value).startswith(
        "worker 'stuck', Configure: DEADLINE_EXCEEDED: no answer within its deadline of 0.3 s (")


def test_weight_calls_have_deadlines_scaled_to_the_size(stalling, monkeypatch):
    _, client = stalling
    assert weights_deadline(100 * 1024 * 1024) == 60 + 25  # a minute, plus 100 MiB at 4 MiB/s
    assert weights_deadline(None) == client_module.CONFIGURE_DEADLINE_SECONDS
    monkeypatch.setattr(client_module, "WEIGHTS_DEADLINE_SECONDS", 0.3)
    client._weights_bytes = 0
    with pytest.raises(WorkerError, match=r"^worker 'stuck', GetWeights: DEADLINE_EXCEEDED: no answer within its "):
        client.get_weights()


class PatientWorker(worker_pb2_grpc.WorkerServicer):
    def GetMetadata(self, request, context):
        # Long enough for the client's pings (sent at most about once a second whatever is asked) to
        # count three strikes against a server with gRPC's default policy.
        threading.Event().wait(6.0)
        return worker_pb2.GetMetadataResponse(worker="patient")


def test_the_server_accepts_the_clients_keepalive_pings_through_a_long_silent_call(monkeypatch):
    # The client pings every 0.1 s instead of 20 s; the server's policy follows the client's interval,
    # its own pings stay as they are. Without ping_policy_options the server ends the call after 3 or
    # 4 s with GOAWAY "too_many_pings" (UNAVAILABLE: Too many pings).
    monkeypatch.setattr(client_module, "CLIENT_OPTIONS", GRPC_OPTIONS + keepalive_options(0.1, 1.0))
    server, address = _serve(PatientWorker(), GRPC_OPTIONS + keepalive_options(20, 20) + ping_policy_options(0.1))
    client = WorkerClient("patient", address)
    try:
        assert client.metadata().worker == "patient"
    finally:
        client.close()
        server.stop(None)


def test_keepalive_finds_a_stopped_worker_in_the_middle_of_a_call(null_worker, monkeypatch):
    worker, _ = null_worker
    monkeypatch.setattr(client_module, "CLIENT_OPTIONS", GRPC_OPTIONS + keepalive_options(0.2, 0.5))
    monkeypatch.setattr(client_module, "CONFIGURE_DEADLINE_SECONDS", 600.0)
    client = WorkerClient("null", worker.address)
    try:
        assert client.metadata().pid == worker.process.pid
        os.kill(worker.process.pid, signal.SIGSTOP)
        with pytest.raises(WorkerError) as caught:  # without keepalive: a 600 s wait
            client.configure(worker_pb2.ConfigureRequest())
    finally:
        client.close()
    assert (caught.value.rpc, caught.value.code) == ("Configure", "UNAVAILABLE")
    assert "keepalive ping went unanswered" in str(caught.value)
    # The fixture's stop() ends the stopped worker (SIGTERM, SIGCONT).
