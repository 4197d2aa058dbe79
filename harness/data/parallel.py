"""Build batches on a pool of threads, a few ahead of the sender, and hand them out in order.

Augmenting (OpenCV's warpAffine) and hashing (hashlib on buffers of more than 2 KiB) release the
GIL, so threads spread the batch building over cores without processes, pickling or shared memory.
Each batch is built by one call of a pure function of its index, and the batches are handed out in
index order whatever thread finishes first: the bytes and their order do not depend on the number of
threads (tests/test_parallel_batches.py proves it byte for byte).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
MAX_DEFAULT_THREADS = 4  # beyond 4 the gRPC sender, one thread, is the limit at 224 px
# glibc's M_TRIM_THRESHOLD and M_MMAP_THRESHOLD (malloc.h), and the largest mmap threshold it accepts.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
_TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024


@functools.cache
def reuse_batch_memory() -> bool:
    """Have glibc's malloc keep freed batch-sized buffers for reuse instead of unmapping them.

    By default every buffer over 128 KiB (a batch's pixels: 13 MB at 256 x 224 px, copied into the
    protobuf message, the gRPC frame, ...) is a fresh mmap whose pages fault in on first write, with
    the GIL held for the protobuf copy: that made encoding a batch about 3x slower than its hashing
    and kept a second thread from helping. Buffers up to 32 MiB now come from the heap, which keeps up
    to 256 MiB free. Once per process; False where the C library is not glibc (nothing changed).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt, nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES) and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES))


def default_threads() -> int:
    """Batch-building threads when none are asked for: one per core, at most MAX_DEFAULT_THREADS."""
    return max(1, min(MAX_DEFAULT_THREADS, os.cpu_count() or 1))


class OrderedBuilds(Generic[T], Iterator[T]):
    """`build(0)`, `build(1)`, ... `build(count - 1)` on `threads` threads, yielded in that order.

    At most `ahead` results are built or waiting at any time (memory stays bounded: a batch of 256
    images at 224 px is 13 MB). An exception in `build` is re-raised in the consumer at its index.
    `close()` (or garbage collection of a consumer that stopped early) drops what was not taken.
    Even with one thread the building runs in the background, overlapping the sending.
    """

    def __init__(self, build: Callable[[int], T], count: int, threads: int = 1, ahead: int | None = None) -> None:
        if threads < 1:
            raise ValueError(f"data threads: {threads} must be at least 1")
        reuse_batch_memory()
        self._build = build
        self._count = count
        self._ahead = ahead if ahead is not None else max(4, 2 * threads)
        # gRPC takes batches on its own thread while the caller may close(): never submit after a shutdown.
        self._lock = threading.Lock()
        self._pending: deque[Future[T]] = deque()
        self._next_index = 0  # the next index to submit
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="batches")
        self._fill()

    def _fill(self) -> None:
        with self._lock:
            while not self._closed and len(self._pending) < self._ahead and self._next_index < self._count:
                self._pending.append(self._pool.submit(self._build, self._next_index))
                self._next_index += 1

    def __next__(self) -> T:
        with self._lock:
            future = self._pending.popleft() if self._pending else None
        if future is None:
            self.close()
            raise StopIteration
        try:
            result = future.result()
        except CancelledError:  # closed while this one waited to be built: the end, not an error
            raise StopIteration from None
        except BaseException:
            self.close()
            raise
        self._fill()
        return result

    def close(self) -> None:
        """Stop building; batches not yet taken are dropped (one being built finishes first, unseen)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for future in self._pending:
                future.cancel()
            self._pending.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __del__(self) -> None:
        if hasattr(self, "_pool"):  # not when __init__ refused its arguments
            self.close()
