"""A malformed batch gets INVALID_ARGUMENT naming the field; the worker keeps serving; the harness
raises one WorkerError naming the worker and the RPC."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cxrbench.worker.v1 import worker_pb2
from cxrbench.worker.v1.tensors import make_batch
from harness.runtime.client import WorkerError

SIZE = 32


# Malformed batches follow a good one (index 0) on the same stream, as index 1.
def good_batch(index: int = 0) -> worker_pb2.Batch:
    rng = np.random.default_rng(index)
    pixels = rng.integers(0, 256, (4, SIZE, SIZE), dtype=np.uint8)
    labels = (rng.random((4, 14)) < 0.3).astype(np.uint8)
    return make_batch(index, pixels, labels)


def wrong_shape() -> worker_pb2.Batch:
    return make_batch(1, np.zeros((4, SIZE, SIZE + 1), np.uint8), np.zeros((4, 14), np.uint8))


def wrong_dtype() -> worker_pb2.Batch:
    return make_batch(1, np.zeros((4, SIZE, SIZE), np.float32), np.zeros((4, 14), np.uint8))


def wrong_length() -> worker_pb2.Batch:
    batch = good_batch(1)
    batch.pixels.data = batch.pixels.data[:-10]
    return batch


def digest_mismatch() -> worker_pb2.Batch:
    batch = good_batch(1)
    data = bytearray(batch.pixels.data)
    data[0] ^= 0xFF  # one flipped byte after the digest was computed
    batch.pixels.data = bytes(data)
    return batch


def wrong_label_count() -> worker_pb2.Batch:
    return make_batch(1, np.zeros((4, SIZE, SIZE), np.uint8), np.zeros((4, 13), np.uint8))


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (wrong_shape, "batch.pixels.shape"),
        (wrong_dtype, "batch.pixels.dtype"),
        (wrong_length, "batch.pixels.data"),
        (digest_mismatch, "batch.digest"),
        (wrong_label_count, "batch.labels.shape"),
    ],
)
def test_malformed_training_batch_is_invalid_argument_and_worker_keeps_serving(null_worker, make, field):
    worker, client = null_worker
    with pytest.raises(WorkerError) as caught:
        list(client.train([good_batch(0), make()]))
    error = caught.value
    assert (error.worker, error.rpc, error.code) == ("null", "Train", "INVALID_ARGUMENT")
    assert error.details.startswith(field), error.details
    assert str(error).startswith(f"worker 'null', Train: INVALID_ARGUMENT: {field}")
    # Still serving: health, metadata, and a good batch on a new stream.
    assert worker.exit_reason() is None
    assert client.is_serving()
    assert client.metadata().worker == "null"
    steps = list(client.train([good_batch(1)]))
    assert [step.digest for step in steps] == [good_batch(1).digest]


def test_prediction_batch_carrying_labels_is_refused(null_worker):
    _, client = null_worker
    with pytest.raises(WorkerError) as caught:
        client.predict([good_batch()])
    assert caught.value.code == "INVALID_ARGUMENT"
    assert caught.value.details.startswith("batch.labels")


def test_worker_echoes_the_digest_of_every_batch_in_order(null_worker):
    _, client = null_worker
    batches = [good_batch(i) for i in range(5)]
    steps = list(client.train(batches))
    assert [s.index for s in steps] == [0, 1, 2, 3, 4]
    assert [s.digest for s in steps] == [b.digest for b in batches]


def test_unknown_architecture_is_invalid_argument_naming_the_field(null_worker):
    from harness.config import BenchmarkConfig
    from harness.training.settings import configure_request

    _, client = null_worker
    request = configure_request(BenchmarkConfig(workers="null", image_size=SIZE).training(), 14)
    request.architecture = "vgg16"
    with pytest.raises(WorkerError) as caught:
        client.configure(request)
    assert caught.value.code == "INVALID_ARGUMENT"
    assert caught.value.details.startswith("architecture: unknown 'vgg16'")


def test_unsupported_precision_is_unimplemented(monkeypatch):
    # The null worker honours every precision (it computes nothing): a backend offering fp32 alone shows the rule.
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "workers" / "null"))
    from cxrbench_null.trainer import NullBackend

    from cxrbench_worker.backend import UnsupportedOption
    from cxrbench_worker.servicer import spec_from_request
    from harness.config import BenchmarkConfig
    from harness.training.settings import configure_request

    class Fp32Only(NullBackend):
        precisions = ("fp32",)

    request = configure_request(BenchmarkConfig(workers="null", image_size=SIZE, precision="bf16-mixed").training(), 14)
    with pytest.raises(UnsupportedOption) as caught:
        spec_from_request(request, Fp32Only())
    assert caught.value.field == "numerics.precision"
    assert "'bf16-mixed' is not offered by this worker" in str(caught.value)


@pytest.mark.parametrize("name", ["mixed", "bf16", "fp16", "FP32"])
def test_unknown_precision_name_is_invalid_argument_listing_the_three(null_worker, name):
    from harness.config import BenchmarkConfig
    from harness.training.settings import configure_request

    _, client = null_worker
    request = configure_request(BenchmarkConfig(workers="null", image_size=SIZE).training(), 14)
    request.numerics.precision = name
    with pytest.raises(WorkerError) as caught:
        client.configure(request)
    assert caught.value.code == "INVALID_ARGUMENT"
    assert caught.value.details == f"numerics.precision: unknown {name!r} (known: fp32, bf16-mixed, fp16-mixed)"


def test_harness_and_workers_name_the_same_precisions():
    from cxrbench_worker.backend import PRECISIONS as WORKER_PRECISIONS
    from harness.training.settings import PRECISIONS

    assert PRECISIONS == WORKER_PRECISIONS == ("fp32", "bf16-mixed", "fp16-mixed")


def test_weights_round_trip_through_get_and_set(null_worker):
    _, client = null_worker
    data = client.get_weights()
    assert client.set_weights(data) == 1
    with pytest.raises(WorkerError) as caught:
        client.set_weights(b"not a safetensors file")
    assert caught.value.code == "INVALID_ARGUMENT"
