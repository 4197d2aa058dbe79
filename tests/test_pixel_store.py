"""The pixel store: cached once, keyed by every parameter, never half-written."""

from __future__ import annotations

import numpy as np
import pytest

from harness.data.datasets import load_dataset
from harness.data.datasets.summary import summary_lines
from harness.data.pixel_store import DatasetArrays, open_or_build, store_key


def tiny_arrays(value: int = 7) -> DatasetArrays:
    return DatasetArrays(
        pixels=np.full((3, 16, 16), value, np.uint8), labels=np.eye(3, 14, dtype=np.uint8),
        patient_ids=np.array([1, 1, 2]), sample_ids=("a", "b", "c"), label_names=tuple(f"L{i}" for i in range(14)),
        boxes=np.zeros((0, 6), np.int32), notes={"kind": "test"},
    )


def test_store_is_built_once_then_reused_memory_mapped(tmp_path):
    calls = []

    def build():
        calls.append(1)
        return tiny_arrays()

    first = open_or_build(tmp_path, {"dataset": "t", "size": 16}, build)
    second = open_or_build(tmp_path, {"dataset": "t", "size": 16}, build)
    assert calls == [1]
    assert isinstance(second.pixels, np.memmap) and not second.pixels.flags.writeable
    assert first.content_sha256 == second.content_sha256
    assert second.sample_ids == ("a", "b", "c") and int(second.pixels[2, 0, 0]) == 7


def test_any_changed_parameter_gives_another_store():
    assert store_key({"dataset": "t", "size": 16}) != store_key({"dataset": "t", "size": 32})
    assert store_key({"a": 1, "b": 2}) == store_key({"b": 2, "a": 1})


def test_interrupted_build_leaves_no_store(tmp_path):
    def failing_build():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        open_or_build(tmp_path, {"dataset": "t"}, failing_build)
    assert list(tmp_path.glob("stores/*")) == []
    store = open_or_build(tmp_path, {"dataset": "t"}, tiny_arrays)  # the next run builds it properly
    assert len(store) == 3


def test_a_failure_while_writing_leaves_no_store(tmp_path, monkeypatch):
    # The pixels are on disk when writing the index fails: the half-written folder must vanish.
    def broken_savez(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        open_or_build(tmp_path, {"dataset": "t"}, tiny_arrays)
    assert list(tmp_path.glob("stores/*")) == []


def test_phantom_store_says_its_boxes_come_from_the_planted_findings(tmp_path):
    store = load_dataset("phantom", 32, seed=0, cache=tmp_path, patients=6)
    images = len(np.unique(store.boxes[:, 0]))
    expected = f"{len(store.boxes):,} bounding boxes on {images:,} images, one per planted finding"
    assert len(store.boxes) > 0 and store.notes["bounding_boxes"].startswith(expected)
    assert store.notes["bounding_boxes"] in summary_lines(store)
