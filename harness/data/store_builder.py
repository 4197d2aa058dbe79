"""Build a pixel store chunk by chunk: bounded memory, resumable after an interruption, atomic.

Large datasets (NIH: 112,120 images) cannot be decoded in one go. The builder appends decoded
chunks, in source order, to `<key>.partial/pixels.u8` and records after each chunk how far it got
in a small journal. A new build of the same source picks up from the journal; a build of another
source, or a journal that does not match the pixels on disk, starts over. Only `finish()` renames
the folder to its final name, so an interrupted build never leaves a store that looks complete.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO

import numpy as np

from harness.data.pixel_store import (
    META_FILE,
    PIXELS_FILE,
    DatasetArrays,
    PixelStore,
    open_store,
    store_key,
    write_index,
)

JOURNAL_FILE = "journal.json"
_READ_BLOCK = 16 << 20


@dataclass
class Progress:
    """What the journal records: source rows consumed, and which were skipped and why.

    Every done row that was not skipped is in the pixels file, in order. The journal is rewritten
    after every chunk, so it stays small: it lists only the (few) skipped and converted rows.
    """

    next_row: int = 0  # source rows [0, next_row) are done (kept or skipped)
    skipped: list[dict] = field(default_factory=list)  # {"row", "where", "reason"}
    converted: list[dict] = field(default_factory=list)  # {"row", "where", "note"}

    @property
    def kept(self) -> list[int]:
        """Source rows whose pixels are in the file, in order."""
        skipped = {item["row"] for item in self.skipped}
        return [row for row in range(self.next_row) if row not in skipped]

    @property
    def kept_count(self) -> int:
        return self.next_row - len(self.skipped)


def finished_store(cache_root: Path, source: dict) -> PixelStore | None:
    """The finished store for `source`, or None when it has not been built."""
    final = cache_root / "stores" / store_key(source)
    return open_store(final) if (final / META_FILE).is_file() else None


class StoreBuilder:
    """Append decoded chunks for `source`; `finish()` writes the index and publishes the store.

    Use as a context manager: it holds an exclusive lock on the source, so two builds of the same
    data never write the same files.
    """

    def __init__(self, cache_root: Path, source: dict, image_size: int) -> None:
        self.source = source
        self.image_size = image_size
        stores = cache_root / "stores"
        stores.mkdir(parents=True, exist_ok=True)
        key = store_key(source)
        self.final = stores / key
        self.partial = stores / f"{key}.partial"
        self._lock_path = stores / f"{key}.lock"
        self._lock: TextIO | None = None
        self._pixels: BinaryIO | None = None
        self.progress = Progress()

    def __enter__(self) -> StoreBuilder:
        self._lock = open(self._lock_path, "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise RuntimeError(f"another process is preparing this dataset into {self.partial}; "
                               "wait for it to finish (or stop it) and run again") from None
        self.progress = self._resume()
        self._pixels = open(self.partial / PIXELS_FILE, "r+b")
        self._pixels.truncate(self.progress.kept_count * self._image_bytes)
        self._pixels.seek(0, os.SEEK_END)
        return self

    def __exit__(self, *exc) -> None:
        if self._pixels is not None:
            self._pixels.close()
        if self._lock is not None:
            self._lock.close()  # releases the lock; the partial folder stays for the next run to resume

    @property
    def _image_bytes(self) -> int:
        return self.image_size * self.image_size

    def _resume(self) -> Progress:
        """The journal of an earlier, interrupted build of the same source, or a fresh start."""
        journal = self.partial / JOURNAL_FILE
        try:
            saved = json.loads(journal.read_text())
            if saved["source"] == self.source and saved["image_size"] == self.image_size:
                progress = Progress(**saved["progress"])
                if (self.partial / PIXELS_FILE).stat().st_size >= progress.kept_count * self._image_bytes:
                    return progress
        except (OSError, ValueError, KeyError, TypeError):
            pass  # no journal, or one that cannot be trusted: start over
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(parents=True)
        (self.partial / PIXELS_FILE).touch()
        return Progress()

    def append(self, rows: range, pixels: np.ndarray, skipped: list[dict], converted: list[dict]) -> None:
        """Record that source `rows` are done: `pixels` holds the image of every row not in `skipped`, in order."""
        if rows.start != self.progress.next_row:
            raise ValueError(f"chunk starts at source row {rows.start}, expected {self.progress.next_row}")
        kept = len(rows) - len(skipped)
        if pixels.shape != (kept, self.image_size, self.image_size) or pixels.dtype != np.uint8:
            raise ValueError(f"chunk pixels {pixels.shape} {pixels.dtype} do not match {kept} kept images")
        if any(not rows.start <= item["row"] < rows.stop for item in skipped):
            raise ValueError(f"a skipped row lies outside the chunk {rows.start}..{rows.stop - 1}")
        assert self._pixels is not None, "StoreBuilder.append outside its `with` block"
        self._pixels.write(np.ascontiguousarray(pixels).data)
        self._pixels.flush()  # in the OS's hands before the journal says so: survives a killed process
        self.progress.next_row = rows.stop
        self.progress.skipped += skipped
        self.progress.converted += converted
        temporary = self.partial / f"{JOURNAL_FILE}.tmp"
        temporary.write_text(json.dumps({"source": self.source, "image_size": self.image_size,
                                         "progress": asdict(self.progress)}))
        os.replace(temporary, self.partial / JOURNAL_FILE)

    def finish(self, index: DatasetArrays) -> PixelStore:
        """Write the index of the kept rows (`index` without pixels), then publish the store atomically."""
        count = self.progress.kept_count
        if len(index.sample_ids) != count or len(index.labels) != count:
            raise ValueError(f"index has {len(index.sample_ids)} samples, the pixels file {count}")
        assert self._pixels is not None, "StoreBuilder.finish outside its `with` block"
        self._pixels.flush()
        os.fsync(self._pixels.fileno())
        shape = (count, self.image_size, self.image_size)
        write_index(self.partial, index, self.source, shape, self._content_digest(index))
        (self.partial / JOURNAL_FILE).unlink()
        os.rename(self.partial, self.final)  # atomic: the store appears complete or not at all
        return open_store(self.final)

    def _content_digest(self, index: DatasetArrays) -> str:
        """The same digest as pixel_store.content_digest, streamed from disk (bounded memory)."""
        digest = hashlib.sha256()
        with open(self.partial / PIXELS_FILE, "rb") as pixels:
            while block := pixels.read(_READ_BLOCK):
                digest.update(block)
        digest.update(np.ascontiguousarray(index.labels, dtype=np.uint8).tobytes())
        digest.update(np.ascontiguousarray(index.patient_ids, dtype=np.int64).tobytes())
        return digest.hexdigest()
