"""The same seed gives byte-identical phantom pixels and batch order; another seed differs."""

from __future__ import annotations

import numpy as np

from harness.data.batches import epoch_order, order_digest, training_batches, training_chunks
from harness.data.datasets import load_dataset
from harness.data.splits import patient_wise_split


def batch_digests(store, seed: int, epoch: int) -> list[str]:
    split = patient_wise_split(store.patient_ids, seed=seed)
    chunks = training_chunks(epoch_order(split.train, seed, epoch), batch_size=8)
    return [batch.digest for batch in training_batches(store.pixels, store.labels, chunks)]


def test_same_seed_gives_identical_pixels_and_batch_digests(tmp_path):
    first = load_dataset("phantom", 32, seed=3, cache=tmp_path / "a", patients=40)
    second = load_dataset("phantom", 32, seed=3, cache=tmp_path / "b", patients=40)  # built anew
    assert not second.path.is_relative_to(tmp_path / "a")  # really built twice, in two caches
    assert first.content_sha256 == second.content_sha256
    assert np.array_equal(np.asarray(first.pixels), np.asarray(second.pixels))
    assert order_digest(batch_digests(first, 3, 1)) == order_digest(batch_digests(second, 3, 1))


def test_another_seed_gives_other_pixels_and_order(tmp_path):
    first = load_dataset("phantom", 32, seed=3, cache=tmp_path, patients=40)
    other = load_dataset("phantom", 32, seed=4, cache=tmp_path, patients=40)
    assert first.content_sha256 != other.content_sha256
    assert order_digest(batch_digests(first, 3, 1)) != order_digest(batch_digests(other, 4, 1))


def test_each_epoch_has_its_own_order_and_the_same_order_every_time(tmp_path):
    store = load_dataset("phantom", 32, seed=3, cache=tmp_path, patients=40)
    epoch1, epoch2 = batch_digests(store, 3, 1), batch_digests(store, 3, 2)
    assert epoch1 != epoch2
    assert sorted(epoch_order(np.arange(50), 3, 1)) == list(range(50))
    assert batch_digests(store, 3, 1) == epoch1


def test_training_drops_only_an_incomplete_last_batch():
    chunks = training_chunks(np.arange(21), batch_size=8)
    assert [len(c) for c in chunks] == [8, 8]


# The phantom's output for one small config, pinned. When a change to the generator alters it,
# bump PHANTOM_GENERATOR_VERSION in harness/data/datasets/__init__.py (so cached pixel stores built by
# the old generator are never reused) and record the new digest here.
PINNED_PHANTOM = (2, "b2412e7cc03db09878fad066e2a7eb3344953bcc2ca8344306fa2e743382b73e")


def test_phantom_output_is_pinned_to_the_generator_version():
    import hashlib

    from harness.data.datasets import PHANTOM_GENERATOR_VERSION
    from harness.data.datasets.phantom import PhantomConfig, generate_phantom

    data = generate_phantom(PhantomConfig(seed=3, patients=20, image_size=32, conspicuity=1.0))  # pinned at 1.0
    digest = hashlib.sha256(
        data.pixels.tobytes() + data.labels.tobytes() + data.patient_ids.tobytes() + data.boxes.tobytes()
    ).hexdigest()
    assert (PHANTOM_GENERATOR_VERSION, digest) == PINNED_PHANTOM, (
        "the phantom's output changed: bump PHANTOM_GENERATOR_VERSION and update PINNED_PHANTOM"
    )
