"""The harness checks every reply of a stream: one per batch, in order, with the digest it sent.

A misbehaving worker (served in-process here) is caught; a failure on the harness side is reported
as the harness's own, not blamed on the worker.
"""

from __future__ import annotations

import tempfile
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest

from cxrbench.worker.v1 import worker_pb2, worker_pb2_grpc
from cxrbench.worker.v1.tensors import make_batch
from harness.runtime.client import WorkerClient, WorkerError


class MisbehavingWorker(worker_pb2_grpc.WorkerServicer):
    """Answers Train according to `mode`: honest, wrong_digest, out_of_order, early_end, extra."""

    def __init__(self) -> None:
        self.mode = "honest"

    def Train(self, request_iterator, context):
        requests = list(request_iterator)
        replies = [worker_pb2.TrainResponse(index=r.batch.index, digest=r.batch.digest, loss=0.5) for r in requests]
        if self.mode == "wrong_digest":
            replies[1].digest = "f" * 64
        elif self.mode == "out_of_order":
            replies[0], replies[1] = replies[1], replies[0]
        elif self.mode == "early_end":
            replies = replies[:-1]
        elif self.mode == "extra":
            replies.append(worker_pb2.TrainResponse(index=99, digest="0" * 64))
        yield from replies


@pytest.fixture
def misbehaving():
    servicer = MisbehavingWorker()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    worker_pb2_grpc.add_WorkerServicer_to_server(servicer, server)
    socket = Path(tempfile.mkdtemp(prefix="cxrbench-test-")) / "w.sock"
    server.add_insecure_port(f"unix://{socket}")
    server.start()
    client = WorkerClient("fake", f"unix://{socket}")
    yield servicer, client
    client.close()
    server.stop(None)


def batches(count: int = 3):
    for index in range(count):
        yield make_batch(index, np.full((2, 32, 32), index, np.uint8), np.zeros((2, 14), np.uint8))


def test_an_honest_worker_passes(misbehaving):
    _, client = misbehaving
    assert [step.index for step in client.train(batches())] == [0, 1, 2]


@pytest.mark.parametrize(
    ("mode", "code", "words"),
    [
        ("wrong_digest", "DIGEST_MISMATCH", "batch 1 was sent with digest"),
        ("out_of_order", "PROTOCOL", "answered batch 1 where batch 0 was due"),
        ("early_end", "PROTOCOL", "ended the stream after 2 of 3 batches"),
        ("extra", "PROTOCOL", "answered batch 99, which was not sent"),
    ],
)
def test_a_misbehaving_worker_aborts_the_stream(misbehaving, mode, code, words):
    servicer, client = misbehaving
    servicer.mode = mode
    with pytest.raises(WorkerError) as caught:
        list(client.train(batches()))
    assert (caught.value.worker, caught.value.rpc, caught.value.code) == ("fake", "Train", code)
    assert words in caught.value.details


def test_a_harness_side_failure_is_reported_as_itself(misbehaving):
    _, client = misbehaving

    def failing_batches():
        yield from batches(1)
        raise OSError("pixels.u8: read error")

    with pytest.raises(OSError, match="pixels.u8: read error"):
        list(client.train(failing_batches()))
