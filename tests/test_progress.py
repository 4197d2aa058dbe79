"""Progress off a terminal is whole lines a person can read in a log; on a terminal, tqdm's live bar."""

from __future__ import annotations

import io

from tqdm import tqdm

from conftest import REPO_ROOT, SMALL_RUN, run_harness
from harness import progress
from harness.progress import PlainProgress, progress_bar


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_lasting_bar_prints_a_line_per_tenth_and_a_closing_line():
    stream, clock = io.StringIO(), Clock()
    bar = PlainProgress(total=100, desc="decoding", unit="img", stream=stream, clock=clock)
    for _ in range(100):
        clock.now += 1.0  # 1 img/s: every tenth takes 10 s
        bar.update(1)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert len(lines) == 11
    assert lines[0] == "decoding: 10% (10/100 img), 00:10 elapsed, about 01:30 left, 1.0 img/s"
    assert lines[-1] == "decoding: done, 100% (100/100 img), 01:40 elapsed, 1.0 img/s"


def test_a_fast_bar_prints_no_more_than_it_must():
    stream, clock = io.StringIO(), Clock()
    with PlainProgress(total=1000, desc="fast", unit="img", stream=stream, clock=clock) as bar:
        for _ in range(1000):
            clock.now += 0.001
            bar.update(1)
    assert stream.getvalue().splitlines() == ["fast: done, 100% (1,000/1,000 img), 00:01 elapsed, 1000.0 img/s"]


def test_a_transient_bar_prints_every_30_seconds_only_and_ends_silently():
    stream, clock = io.StringIO(), Clock()
    bar = PlainProgress(total=90, desc="pytorch epoch 1/5", unit="img", leave=False, stream=stream, clock=clock)
    for _ in range(90):
        clock.now += 1.0
        bar.update(1)
        bar.set_postfix(loss="0.2500", refresh=False)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3  # at 30, 60 and 90 s
    assert lines[0].startswith("pytorch epoch 1/5: 33% (30/90 img), 00:30 elapsed") and lines[0].endswith("; loss=0.2500")


def test_a_bar_without_total_ticks_by_time():
    stream, clock = io.StringIO(), Clock()
    bar = PlainProgress(desc="environment keras", unit=" step", stream=stream, clock=clock)
    clock.now = 31.0
    bar.refresh()
    bar.set_postfix_str("Installing collected packages")
    bar.update()
    bar.close()
    assert stream.getvalue().splitlines() == [
        "environment keras: 0 step, 00:31 elapsed",
        "environment keras: done, 1 step, 00:31 elapsed, 0.0 step/s; Installing collected packages",
    ]


def test_the_bar_is_tqdm_on_a_terminal_and_plain_lines_elsewhere(monkeypatch):
    monkeypatch.setattr(progress, "is_terminal", lambda stream: True)
    with progress_bar(total=1, disable=True) as bar:
        assert isinstance(bar, tqdm)
    monkeypatch.setattr(progress, "is_terminal", lambda stream: False)
    with progress_bar(total=1, smoothing=0.1) as bar:  # tqdm-only keywords are accepted and ignored
        assert isinstance(bar, PlainProgress)


def test_a_benchmark_logged_to_a_file_has_no_carriage_returns(tmp_path):
    # The harness's own output, both streams into a file as `> run.log 2>&1` would: readable with less.
    result = run_harness(["benchmark", "--workers", "null", "--epochs", "2", "--bootstrap", "0",
                          "--out", str(tmp_path / "results"), *SMALL_RUN], cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    log = result.stdout + result.stderr
    assert "\r" not in log and "\x1b[" not in log
    assert "null epoch 1/2: loss" in result.stdout and "null: test macro AUROC" in result.stdout
