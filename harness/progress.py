"""Progress for people: live bars on a terminal, plain periodic lines in a log.

Carriage-return frames are unreadable once they land in a file (CI, `2> run.log`, a cluster job),
so when standard error is not a terminal a bar becomes a `PlainProgress`: one line whenever another
tenth is done and at least every 30 seconds, and a closing line with the count, time and rate.
Bars that disappear on a terminal (`leave=False`: an epoch, a prediction pass) print by time only,
since the line that follows them (an epoch's summary) says what they did.
Every part of the harness reports progress through `progress_bar` and `announce`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tqdm import tqdm

LINE_EVERY_SECONDS = 30.0
TENTHS_NO_SOONER_THAN_SECONDS = 5.0  # a fast bar crossing every tenth in a second prints once


def is_terminal(stream: TextIO) -> bool:
    """Whether `stream` is a live terminal (a file, pipe or closed stream is not)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


class PlainProgress:
    """The part of tqdm's interface the harness uses, printing whole lines instead of frames."""

    def __init__(self, iterable: Iterable[Any] | None = None, *, total: float | None = None, desc: str = "",
                 unit: str = "it", leave: bool = True, initial: float = 0, stream: TextIO | None = None,
                 clock=time.monotonic, **display: Any) -> None:
        # `display`: tqdm's drawing options (smoothing, dynamic_ncols, ...), which a line has no use for.
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit, self.leave = total, desc, unit.strip() or "it", leave
        self.n = initial
        self._start_n = initial
        self._stream = stream or sys.stderr
        self._clock = clock
        self._started = self._last_line = clock()
        self._tenths = self._tenth(initial)
        self._postfix = ""
        self._closed = False

    def _tenth(self, n: float) -> int:
        return int(10 * n / self.total) if self.total else 0

    def _line(self, text: str) -> None:
        print(f"{self.desc}: {text}" if self.desc else text, file=self._stream, flush=True)
        self._last_line = self._clock()

    def _status(self) -> str:
        elapsed = self._clock() - self._started
        done = self.n - self._start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        count = f"{self.n:,.0f}/{self.total:,.0f} {self.unit}" if self.total else f"{self.n:,.0f} {self.unit}"
        parts = [f"{100 * self.n / self.total:.0f}% ({count})" if self.total else count, f"{_clock(elapsed)} elapsed"]
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"about {_clock((self.total - self.n) / rate)} left")
        if rate > 0:
            parts.append(f"{rate:.1f} {self.unit}/s")
        return ", ".join(parts) + (f"; {self._postfix}" if self._postfix else "")

    def _maybe_line(self) -> None:
        now = self._clock()
        tenths = self._tenth(self.n)
        crossed = self.leave and tenths > self._tenths and now - self._last_line >= TENTHS_NO_SOONER_THAN_SECONDS
        if crossed or now - self._last_line >= LINE_EVERY_SECONDS:
            self._tenths = tenths
            self._line(self._status())

    def update(self, n: float = 1) -> None:
        """Count `n` more done."""
        self.n += n
        self._maybe_line()

    def refresh(self) -> None:
        """Called while nothing is counted (a silent pip install): a line at least every 30 s."""
        self._maybe_line()

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        """Shown at the end of the next line, as tqdm shows it beside the bar."""
        self._postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self._postfix = text

    def close(self) -> None:
        """A closing line for bars that stay (leave=True); transient ones end silently."""
        if self._closed:
            return
        self._closed = True
        if self.leave:
            self._line("done, " + self._status())

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None, "PlainProgress was given nothing to iterate over"
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def progress_bar(iterable: Iterable[Any] | None = None, **options: Any) -> Any:
    """A tqdm bar on a terminal, a PlainProgress otherwise; same keywords (total, desc, unit, leave, initial)."""
    if is_terminal(sys.stderr):
        options.setdefault("dynamic_ncols", True)
        return tqdm(iterable, **options)
    return PlainProgress(iterable, **options)


def announce(text: str) -> None:
    """Print a line of news (an epoch's summary) on standard output without breaking a live bar."""
    if is_terminal(sys.stderr):
        tqdm.write(text)
    else:
        print(text, flush=True)
