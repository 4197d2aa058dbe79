"""The stream watchdog: cancels a Train or Predict stream whose worker has stopped answering.

Keepalive finds a dead connection; it cannot find a worker that answers pings but not batches (a
wedged kernel, a deadlock in the framework). The watchdog does: when a batch has been waiting for its
reply longer than max(floor, 20 x the median step so far), it cancels the call and says so.

A step is the time from when a reply became due (its batch was sent, or the previous reply came) to
its reply; the first reply of each stream is left out of the median (it also starts the stream and
may trace or compile). Before any step is known the floor alone applies: the first reply of a run
is where frameworks compile, and the floor (`--stall-timeout`, 120 s by default) is sized for that.
Time with no batch outstanding (the harness itself building batches) never counts against the worker.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

STALL_FACTOR = 20  # a step 20 times slower than the median is no longer a slow step
DEFAULT_STALL_FLOOR_SECONDS = 120.0
STEP_HISTORY = 1000  # the median of the latest steps, so a long run follows the worker's current speed


def stall_limit(floor: float, steps: Sequence[float]) -> float:
    """Seconds a reply may take: max(floor, 20 x the median of `steps`); the floor alone without steps."""
    return max(floor, STALL_FACTOR * statistics.median(steps)) if steps else floor


def seconds_text(seconds: float) -> str:
    """"0.5", "5.0", "84": a tenth of a second where it matters, whole seconds past ten."""
    return f"{seconds:.0f}" if seconds >= 10 else f"{seconds:.1f}"


def describe_limit(floor: float, steps: Sequence[float]) -> str:
    """How the limit was computed: "max(5 s, 20 x median step 0.21 s)"."""
    if not steps:
        return "the floor, no step timed yet"
    return f"max({floor:g} s, {STALL_FACTOR} x median step {statistics.median(steps):.2g} s)"


class StreamWatchdog:
    """Watches one stream; calls `cancel` once when a due reply is later than `stall_limit`.

    The caller reports each batch handed to gRPC (`sent`) and each reply (`answered`); `steps` is the
    step history this stream adds to (kept by the client across its streams of the same RPC).
    After a cancel, `stalled` says why. `stop()` ends the watching thread.
    """

    def __init__(self, floor: float, steps: deque[float], cancel: Callable[[], object]) -> None:
        self.floor = floor
        self.stalled: str | None = None
        self._steps = steps
        self._cancel = cancel
        self._condition = threading.Condition()
        self._waiting: deque[float] = deque()  # when each unanswered batch was sent
        self._last_reply: float | None = None
        self._sent = self._answered = 0
        self._last_index: int | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._watch, name="stream-watchdog", daemon=True)
        self._thread.start()

    def sent(self) -> None:
        """A batch was handed to gRPC: its reply is now due."""
        with self._condition:
            self._waiting.append(time.monotonic())
            self._sent += 1
            self._condition.notify()

    def answered(self, index: int) -> None:
        """The reply for the oldest outstanding batch (batch `index`) arrived."""
        now = time.monotonic()
        with self._condition:
            due = self._due_since()
            if self._waiting:
                self._waiting.popleft()
            if self._answered and due is not None:  # the stream's first reply is not a step
                self._steps.append(now - due)
            self._answered += 1
            self._last_index, self._last_reply = index, now
            self._condition.notify()

    def stop(self) -> None:
        """Stop watching (the stream ended, failed or was abandoned) and wait for the thread."""
        with self._condition:
            self._stopped = True
            self._condition.notify()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def progress(self) -> str:
        """How far the stream got: "last batch answered: 3 (4 of the 6 sent)"."""
        with self._condition:
            return self._progress()

    def _progress(self) -> str:
        if not self._answered:
            return f"no batch answered yet ({self._sent} sent)"
        return f"last batch answered: {self._last_index} ({self._answered} of the {self._sent} sent)"

    def _due_since(self) -> float | None:
        """Since when a reply is due: the later of the oldest outstanding send and the last reply."""
        if not self._waiting:
            return None
        return max(self._waiting[0], self._last_reply) if self._last_reply is not None else self._waiting[0]

    def _watch(self) -> None:
        with self._condition:
            while not self._stopped:
                due = self._due_since()
                if due is None:
                    self._condition.wait()
                    continue
                limit = stall_limit(self.floor, self._steps)
                waited = time.monotonic() - due
                if waited >= limit:
                    self.stalled = (f"no reply for {seconds_text(waited)} s (limit {seconds_text(limit)} s = "
                                    f"{describe_limit(self.floor, self._steps)}); {self._progress()}")
                    break
                self._condition.wait(limit - waited)
        if self.stalled is not None:
            self._cancel()
