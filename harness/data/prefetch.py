"""Run an iterator in a background thread, a few items ahead, so building batches overlaps sending.

Numpy gathers, hashing and protobuf encoding release the GIL for most of their work, so one
producer thread keeps up with the gRPC sender on the data-path benchmark.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_DONE = object()


class Prefetch(Generic[T], Iterator[T]):
    """Iterate `source` in a daemon thread with at most `depth` items waiting.

    An exception in the producer is re-raised in the consumer. `close()` (or garbage collection of
    a consumer that stopped early) lets the producer thread finish.
    """

    def __init__(self, source: Iterable[T], depth: int = 4) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(iter(source),), daemon=True, name="prefetch")
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, source: Iterator[T]) -> None:
        try:
            for item in source:
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as error:  # handed to the consumer, which re-raises it
            self._put(error)

    def __next__(self) -> T:
        item = self._queue.get()
        if item is _DONE:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stop the producer; items not yet taken are dropped."""
        self._stop.set()

    def __del__(self) -> None:
        self._stop.set()
