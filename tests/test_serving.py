"""Serving registered models (harness.serving) with the null worker: readings, CAMs, the weights check,
restarts after a lost worker, idle unloading, one worker shared by concurrent requests, clean-up."""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from registered_models import EXPECTED_FLAGS, THRESHOLDS, CountingRuntimes, registered_model, write_weights

from harness.evaluation.cams import class_activation_maps, normalise, upsample
from harness.runtime.client import FEATURE_MAP_BATCH_SIZE, WorkerError
from harness.serving.pool import ModelPool
from harness.serving.reading import ServingError
from harness.serving.served_model import ServedModel
from harness.training.localize import head_weight

SIZE = 64


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return write_weights(tmp_path_factory.mktemp("densenet121"))


@pytest.fixture
def runtimes() -> CountingRuntimes:
    return CountingRuntimes()


@pytest.fixture
def served(weights, runtimes, tmp_path):
    model = ServedModel(registered_model(weights), runtimes, log_dir=tmp_path / "logs")
    yield model
    model.close()


def gradients(n: int) -> np.ndarray:
    """n distinct uint8 (SIZE, SIZE) images: each a gradient along its own direction, plus its index."""
    y, x = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    images = [(np.cos(a) * x + np.sin(a) * y) for a in angles]
    return np.stack([np.clip(np.rint(100 + 80 * image + i), 0, 255) for i, image in enumerate(images)]).astype(np.uint8)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_a_reading_is_the_sigmoid_of_the_null_logits_flagged_at_the_cards_thresholds(served, runtimes):
    assert not served.loaded() and runtimes.starts == 0  # lazily: nothing runs before the first request
    reading = served.read(gradients(3))
    assert served.loaded() and runtimes.starts == 1
    assert reading.model == "cxrbench-densenet121-null@champion"
    assert reading.labels[0] == "Atelectasis" and len(reading.labels) == 14
    assert reading.logits.dtype == np.float32 and np.array_equal(reading.logits, np.zeros((3, 14), np.float32))
    assert reading.probabilities.dtype == np.float64 and np.array_equal(reading.probabilities, np.full((3, 14), 0.5))
    assert np.array_equal(reading.thresholds, THRESHOLDS)
    assert np.array_equal(reading.flags, np.tile(EXPECTED_FLAGS, (3, 1)))  # 0.5 >= 0.5 flags
    assert reading.maps is None


def test_maps_are_the_harness_cams_at_the_input_size_in_0_1_for_more_images_than_one_batch(served, weights):
    images = gradients(FEATURE_MAP_BATCH_SIZE + 4)  # two FeatureMaps batches, 16 + 4
    reading = served.read(images, maps=True)
    assert reading.maps is not None and reading.maps.dtype == np.float32
    assert reading.maps.shape == (20, 14, SIZE, SIZE)
    assert np.array_equal(reading.probabilities, np.full((20, 14), 0.5))  # FeatureMaps' own logits, zero
    # The null worker's features: each 32 x 32 block's mean of pixels / 255, in each of the head's 1024 channels.
    blocks = (images / 255.0).reshape(20, 2, 32, 2, 32).mean(axis=(2, 4))
    features = np.broadcast_to(blocks[:, np.newaxis], (20, 1024, 2, 2)).astype(np.float32)
    head = head_weight(weights.read_bytes(), "densenet121", 14)
    expected = normalise(upsample(class_activation_maps(features, head), SIZE))
    np.testing.assert_allclose(reading.maps, expected, atol=1e-6)  # every image in its place, both batches
    assert reading.maps.min() == 0.0 and reading.maps.max() == 1.0
    assert np.allclose(reading.maps.min(axis=(2, 3)), 0) and np.allclose(reading.maps.max(axis=(2, 3)), 1)


def test_images_of_another_size_are_refused_naming_the_expected_shape(served, runtimes):
    with pytest.raises(ValueError, match=r"uint8 \(n, 64, 64\), got uint8 \(1, 32, 32\)"):
        served.read(np.zeros((1, 32, 32), np.uint8))
    assert runtimes.starts == 0


def test_weights_whose_sha256_differs_from_the_card_are_refused_naming_the_file(weights, runtimes, tmp_path):
    model = ServedModel(registered_model(weights, sha256="0" * 64), runtimes, log_dir=tmp_path)
    with pytest.raises(ServingError, match=rf"^model .*@champion: {weights}: SHA-256 .*0000000000000000.*refusing"):
        model.read(gradients(1))
    assert runtimes.starts == 0 and not model.loaded()  # refused before any worker started


def test_a_killed_worker_fails_the_request_naming_its_log_and_the_next_request_starts_a_fresh_one(served, runtimes):
    served.read(gradients(2))
    first = runtimes.pid()
    os.kill(first, signal.SIGKILL)
    with pytest.raises(ServingError) as failure:
        served.read(gradients(2))
    message = str(failure.value)
    assert "cxrbench-densenet121-null@champion" in message and str(served.log_path) in message
    assert "fresh worker will be started on the next request" in message
    assert isinstance(failure.value.__cause__, WorkerError) and not served.loaded()
    reading = served.read(gradients(2))
    assert np.array_equal(reading.probabilities, np.full((2, 14), 0.5))
    assert runtimes.starts == 2 and runtimes.pid() != first
    assert served.log_path.read_text().count("--- serving cxrbench-densenet121-null@champion, started") == 2


class FailingRuntime:
    """A runtime whose worker never starts, as a missing environment or a crash at import would."""

    name = "local"

    def close(self) -> None:
        pass

    @contextmanager
    def start(self, spec, log_path):
        raise WorkerError(spec.label, "health", "NOT_STARTED", "the worker process exited with code 1")
        yield


def test_a_worker_that_fails_to_start_raises_serving_error_and_the_next_request_tries_again(weights, tmp_path):
    working = CountingRuntimes()
    factories = iter([FailingRuntime, working])
    model = ServedModel(registered_model(weights), lambda: next(factories)(), log_dir=tmp_path)
    try:
        with pytest.raises(ServingError, match=r"could not be started: worker 'null', health: NOT_STARTED: .* "
                                               rf"Worker log: {model.log_path}\. A fresh worker"):
            model.read(gradients(1))
        assert not model.loaded()
        assert model.read(gradients(1)).probabilities.shape == (1, 14) and working.starts == 1
    finally:
        model.close()


def test_a_model_idle_for_its_idle_period_is_unloaded_and_its_process_stopped(weights, runtimes, tmp_path):
    resolve = {"m@champion": registered_model(weights)}.__getitem__
    with ModelPool(idle_seconds=0.5, runtime_factory=runtimes, resolve=resolve, log_dir=tmp_path) as pool:
        pool.read("m@champion", gradients(1))
        pid = runtimes.pid()
        assert pool.loaded() == ["cxrbench-densenet121-null@champion"] and alive(pid)
        assert wait_for(lambda: not pool.loaded())  # the idle check ran
        assert wait_for(lambda: not alive(pid))  # and stopped the process (SIGTERM, then waited for)
        assert pool.read("m@champion", gradients(1)).model == "m@champion"  # loaded again on demand
        assert runtimes.starts == 2


def test_a_worker_started_by_a_request_thread_outlives_that_thread(served, runtimes):
    # Linux's parent-death signal, which each worker sets, follows the thread that started it (a Streamlit
    # script run ends after each rerun): the worker must keep serving after the first request's thread is gone.
    thread = threading.Thread(target=served.read, args=(gradients(1),))
    thread.start()
    thread.join()
    pid = runtimes.pid()
    time.sleep(1.0)  # the worker's parent check polls every 0.5 s; the signal itself comes at once
    assert alive(pid) and served.read(gradients(1)).probabilities.shape == (1, 14)
    assert runtimes.starts == 1


def test_ten_concurrent_requests_all_return_and_share_one_worker(weights, runtimes, tmp_path):
    resolve = {"m@champion": registered_model(weights)}.__getitem__
    results: dict[int, object] = {}

    def request(index: int) -> None:
        try:
            results[index] = pool.read("m@champion", gradients(index + 1), maps=index % 2 == 0)
        except Exception as error:  # kept, so the test reports it
            results[index] = error

    with ModelPool(runtime_factory=runtimes, resolve=resolve, log_dir=tmp_path) as pool:
        threads = [threading.Thread(target=request, args=(i,)) for i in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert runtimes.starts == 1
    for index in range(10):
        reading = results[index]
        assert not isinstance(reading, Exception), reading
        assert reading.probabilities.shape == (index + 1, 14)
        assert (reading.maps is not None) == (index % 2 == 0)


def test_references_to_one_version_share_a_worker_and_memory_is_reported_per_loaded_model(weights, runtimes, tmp_path):
    model = registered_model(weights)
    resolve = {"m@champion": model, "m/1": model}.__getitem__
    with ModelPool(runtime_factory=runtimes, resolve=resolve, log_dir=tmp_path) as pool:
        assert pool.memory() == {}
        assert pool.read("m@champion", gradients(1)).model == "m@champion"
        assert pool.read("m/1", gradients(1)).model == "m/1"
        memory = pool.memory()
        assert runtimes.starts == 1
    assert list(memory) == ["cxrbench-densenet121-null@champion"]
    assert 10 * 2**20 < memory["cxrbench-densenet121-null@champion"] < 4 * 2**30  # a Python process holding the weights


def test_closing_the_pool_stops_every_worker_and_refuses_further_requests(weights, runtimes, tmp_path):
    models = {"a": registered_model(weights, name="a"), "b": registered_model(weights, name="b", image_size=96)}
    pool = ModelPool(runtime_factory=runtimes, resolve=models.__getitem__, log_dir=tmp_path)
    pool.read("a", gradients(1))
    pool.read("b", np.zeros((2, 96, 96), np.uint8))
    pids = [runtimes.pid(0), runtimes.pid(1)]
    assert sorted(pool.loaded()) == ["a@champion", "b@champion"] and all(map(alive, pids))
    pool.close()
    assert not any(map(alive, pids)) and pool.loaded() == []
    with pytest.raises(RuntimeError, match="closed"):
        pool.read("a", gradients(1))


def test_a_card_naming_an_unknown_worker_is_refused_naming_the_model_and_the_label(weights, runtimes, tmp_path):
    model = registered_model(weights)
    model.card["worker"] = "caffe"
    served = ServedModel(model, runtimes, log_dir=tmp_path)
    with pytest.raises(ServingError, match=r"^model cxrbench-densenet121-null@champion: the card's worker 'caffe': "
                                           r"unknown worker 'caffe' \(known: .*null"):
        served.read(gradients(1))
    assert runtimes.starts == 0


def test_a_card_without_a_field_serving_needs_is_refused_naming_the_field(weights, runtimes):
    model = registered_model(weights)
    del model.card["thresholds"]
    with pytest.raises(ServingError, match=r"^model cxrbench-densenet121-null@champion: its model card has no "
                                           r"'thresholds' field$"):
        ServedModel(model, runtimes)
