"""Batches built on several threads are byte-identical, digest for digest and in the same order, to
batches built on one: the number of --data-threads never changes what a worker receives."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from cxrbench.worker.v1.tensors import batch_digest, decode_tensor, make_batch
from harness.data.augmentation import Augmentation, AugmentedPixels
from harness.data.batches import (
    epoch_order,
    evaluation_chunks,
    order_digest,
    prediction_batches,
    training_batches,
    training_chunks,
)
from harness.data.parallel import OrderedBuilds


def store(images: int = 96, size: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, size=(images, size, size), dtype=np.uint8)
    return pixels, (rng.random((images, 14)) < 0.2).astype(np.uint8)


def encoded_training(augment: str, threads: int) -> list[bytes]:
    pixels, labels = store()
    chunks = training_chunks(epoch_order(np.arange(len(pixels)), seed=3, epoch=2), batch_size=8)
    source = AugmentedPixels(pixels, Augmentation.parse(augment), seed=3, epoch=2)
    return [batch.SerializeToString(deterministic=True) for batch in training_batches(source, labels, chunks, threads)]


@pytest.mark.parametrize("augment", ["none", "flip,rotate=20"])
@pytest.mark.parametrize("threads", [2, 3, 8])
def test_training_batches_are_byte_identical_for_one_and_several_threads(augment, threads):
    one = encoded_training(augment, 1)
    several = encoded_training(augment, threads)
    assert len(one) == 12
    assert several == one  # every batch's bytes (index, pixels, labels, digest), in the same order


def test_digests_and_order_digest_are_equal_for_one_and_several_threads():
    pixels, labels = store()
    chunks = training_chunks(epoch_order(np.arange(len(pixels)), seed=0, epoch=1), batch_size=8)
    source = AugmentedPixels(pixels, Augmentation(), seed=0, epoch=1)
    digests = {threads: [batch.digest for batch in training_batches(source, labels, chunks, threads)]
               for threads in (1, 2, 4)}
    assert digests[2] == digests[1] and digests[4] == digests[1]
    assert [batch.index for batch in training_batches(source, labels, chunks, 4)] == list(range(len(chunks)))
    assert order_digest(digests[4]) == order_digest(digests[1])


def test_prediction_batches_are_byte_identical_for_one_and_several_threads():
    pixels, _ = store(images=50)
    chunks = evaluation_chunks(np.arange(50), 16)  # the last batch is short: 2 images
    one = [batch.SerializeToString(deterministic=True) for batch in prediction_batches(pixels, chunks, 1)]
    three = [batch.SerializeToString(deterministic=True) for batch in prediction_batches(pixels, chunks, 3)]
    assert len(one) == 4 and three == one


def test_results_come_in_index_order_even_when_later_ones_finish_first():
    finished: list[int] = []
    lock = threading.Lock()

    def build(index: int) -> int:
        time.sleep(0.002 * (8 - index))  # index 7 is ready first, index 0 last
        with lock:
            finished.append(index)
        return index

    assert list(OrderedBuilds(build, 8, threads=8, ahead=8)) == list(range(8))
    assert finished != sorted(finished)  # they really did finish out of order


def test_an_error_in_a_build_reaches_the_consumer_at_its_index():
    def build(index: int) -> int:
        if index == 3:
            raise ValueError("batch 3: broken")
        return index

    taken = []
    with pytest.raises(ValueError, match="^batch 3: broken$"):
        for value in OrderedBuilds(build, 10, threads=2):
            taken.append(value)
    assert taken == [0, 1, 2]


def test_at_most_ahead_builds_are_started_and_close_stops_the_rest():
    started: list[int] = []
    builds = OrderedBuilds(lambda index: started.append(index) or index, 100, threads=2, ahead=4)
    assert next(builds) == 0
    builds.close()
    assert len(started) <= 5  # the 4 ahead, and the one submitted after the first was taken
    with pytest.raises(StopIteration):
        next(builds)


def test_zero_threads_are_refused():
    with pytest.raises(ValueError, match="^data threads: 0 must be at least 1$"):
        OrderedBuilds(lambda index: index, 3, threads=0)


@pytest.mark.parametrize("labels", [None, np.eye(3, 14, dtype=np.uint8), np.ones((3, 14), dtype=">f4")])
def test_make_batch_digest_is_the_contract_digest_of_the_bytes_it_sends(labels):
    pixels = np.arange(3 * 5 * 7, dtype=np.uint8).reshape(3, 5, 7)[:, :, ::2]  # not contiguous
    batch = make_batch(4, pixels, labels)
    assert batch.digest == batch_digest(batch.pixels, batch.labels if labels is not None else None)
    assert np.array_equal(decode_tensor(batch.pixels, "pixels"), pixels)
    if labels is not None:
        assert np.array_equal(decode_tensor(batch.labels, "labels"), labels)
    else:
        assert not batch.HasField("labels")
