"""The incremental store builder: bounded chunks, resumable after an interruption, never half-published."""

from __future__ import annotations

import numpy as np
import pytest

from harness.data.pixel_store import DatasetArrays, content_digest, open_or_build
from harness.data.store_builder import JOURNAL_FILE, StoreBuilder, finished_store

SOURCE = {"dataset": "t", "version": 1}


def chunk(value: int, count: int = 2, size: int = 8) -> np.ndarray:
    return np.full((count, size, size), value, np.uint8)


def index_for(count: int, notes: dict | None = None) -> DatasetArrays:
    return DatasetArrays(
        pixels=np.zeros((0,), np.uint8), labels=np.eye(count, 14, dtype=np.uint8), patient_ids=np.arange(count) // 2,
        sample_ids=tuple(f"s{i}" for i in range(count)), label_names=tuple(f"L{i}" for i in range(14)),
        boxes=np.zeros((0, 6), np.int32), notes=notes or {}, split_codes=np.arange(count, dtype=np.uint8) % 5,
    )


def test_store_appears_only_when_finished(tmp_path):
    with StoreBuilder(tmp_path, SOURCE, 8) as builder:
        builder.append(range(0, 2), chunk(1), [], [])
        assert finished_store(tmp_path, SOURCE) is None  # half-written: not usable
        store = builder.finish(index_for(2))
    assert finished_store(tmp_path, SOURCE).content_sha256 == store.content_sha256
    assert not list(tmp_path.glob("stores/*.partial"))


def test_interrupted_build_resumes_after_the_last_recorded_chunk(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with StoreBuilder(tmp_path, SOURCE, 8) as builder:
            builder.append(range(0, 2), chunk(1), [], [])
            builder.append(range(2, 4), chunk(2, 1), [{"row": 2, "where": "b.png", "reason": "truncated"}], [])
            builder._pixels.write(b"\x07" * 100)  # a chunk half-written when the process died
            raise KeyboardInterrupt
    with StoreBuilder(tmp_path, SOURCE, 8) as builder:
        assert builder.progress.next_row == 4 and builder.progress.kept == [0, 1, 3]
        assert builder.progress.skipped == [{"row": 2, "where": "b.png", "reason": "truncated"}]
        builder.append(range(4, 6), chunk(3), [], [])
        store = builder.finish(index_for(5))
    assert [int(store.pixels[i, 0, 0]) for i in range(5)] == [1, 1, 2, 3, 3]  # the torn bytes are gone
    assert store.pixels.shape == (5, 8, 8)


def test_streamed_digest_equals_the_in_memory_digest(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (4, 8, 8), dtype=np.uint8)
    with StoreBuilder(tmp_path, SOURCE, 8) as builder:
        builder.append(range(0, 4), pixels, [], [])
        store = builder.finish(index_for(4))
    index = index_for(4)
    in_memory = DatasetArrays(pixels=pixels, labels=index.labels, patient_ids=index.patient_ids, sample_ids=index.sample_ids,
                              label_names=index.label_names, boxes=index.boxes, notes={})
    assert store.content_sha256 == content_digest(in_memory)
    assert np.array_equal(store.split_codes, np.arange(4) % 5)


def test_a_journal_of_another_source_is_not_resumed(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with StoreBuilder(tmp_path, SOURCE, 8) as builder:
            builder.append(range(0, 2), chunk(1), [], [])
            raise KeyboardInterrupt
    journal = next(tmp_path.glob("stores/*.partial")) / JOURNAL_FILE
    journal.write_text(journal.read_text().replace('"version": 1', '"version": 2'))  # stale or foreign journal
    with StoreBuilder(tmp_path, SOURCE, 8) as builder:
        assert builder.progress.next_row == 0 and builder.progress.kept == []


def test_a_chunk_whose_pixels_do_not_match_its_rows_is_refused(tmp_path):
    with StoreBuilder(tmp_path, SOURCE, 8) as builder:
        with pytest.raises(ValueError, match="do not match 1 kept images"):
            builder.append(range(0, 2), chunk(1), [{"row": 0, "where": "a", "reason": "bad"}], [])
        with pytest.raises(ValueError, match="outside the chunk 0..1"):
            builder.append(range(0, 2), chunk(1, 1), [{"row": 5, "where": "a", "reason": "bad"}], [])


def test_chunks_must_arrive_in_source_order(tmp_path):
    with StoreBuilder(tmp_path, SOURCE, 8) as builder:
        with pytest.raises(ValueError, match="chunk starts at source row 2, expected 0"):
            builder.append(range(2, 4), chunk(1), [], [])


def test_two_builds_of_one_source_cannot_run_at_once(tmp_path):
    with StoreBuilder(tmp_path, SOURCE, 8):
        with pytest.raises(RuntimeError, match="another process is preparing this dataset"):
            StoreBuilder(tmp_path, SOURCE, 8).__enter__()


def test_stores_written_before_split_codes_existed_still_open(tmp_path):
    arrays = DatasetArrays(pixels=chunk(5, 3), labels=np.zeros((3, 14), np.uint8), patient_ids=np.arange(3),
                           sample_ids=("a", "b", "c"), label_names=tuple("L" * 14), boxes=np.zeros((0, 6), np.int32), notes={})
    store = open_or_build(tmp_path, {"old": True}, lambda: arrays)
    assert np.array_equal(store.split_codes, np.zeros(3, np.uint8))
