"""The figure of every run: each run's test macro AUROC per worker, runs of one seed (and fold)
joined across workers, so the reader sees training noise and the pairing at a glance. Drawn like
the other figures (harness.report.plots: one style, one colour per worker, deterministic PNG bytes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.lines import Line2D

from harness.report.plots import REFERENCE, _colors, _figure, _png, _value


def run_key(seed, fold) -> tuple[str, str]:
    """What pairs runs across workers (run r of every worker had the same training seed and fold), as
    text the way epochs.csv spells it: "" for no fold."""
    return str(seed), "" if fold in (None, "", 0) else str(fold)


def _run_name(key: tuple[str, str]) -> str:
    seed, fold = key
    return f"seed {seed}" + (f", fold {fold}" if fold else "")


def _stacked(positions: Sequence[float], gap: float) -> list[float]:
    """Label heights at least `gap` apart, each at or above its point, in the points' order."""
    order = sorted(range(len(positions)), key=lambda i: positions[i])
    placed = list(positions)
    for previous, here in zip(order, order[1:], strict=False):
        placed[here] = max(placed[here], placed[previous] + gap)
    return placed


def paired_run_values(runs: Mapping[str, Sequence[dict]]) -> dict[tuple[str, str], list[float]]:
    """Per (seed, fold), in order of first appearance: each worker's macro AUROC, in `runs`' worker order
    (NaN where a worker lacks that run). Runs pair by seed and fold, never by their position in a list."""
    names = list(runs)
    values: dict[tuple[str, str], list[float]] = {}
    for x, name in enumerate(names):
        seen: set[tuple[str, str]] = set()
        for run in runs[name]:
            key = run_key(run.get("seed"), run.get("fold"))
            if key in seen:
                raise ValueError(f"paired_runs_chart: worker {name!r} has two runs of {_run_name(key)}; runs pair "
                                 "across workers by their training seed and fold, so each may occur once")
            seen.add(key)
            values.setdefault(key, [math.nan] * len(names))[x] = _value(run.get("macro_auroc"))
    return values


PAIRED_RUN_LABELS = 16  # more runs than this are drawn without a name each (their names would pile up)


def paired_runs_chart(runs: Mapping[str, Sequence[dict]], colors: dict[str, str] | None = None) -> bytes:
    """Every run's test macro AUROC as a dot, one column per worker, the worker's mean as a short bar.

    `runs[name]` lists the worker's runs, each with "seed", "fold" (None without folds) and
    "macro_auroc" (None or NaN: left out). Runs with the same seed and fold share their starting
    weights, batches and augmentation across workers; a thin grey line joins them, so the scatter in a
    column is training noise and a line's slope is one paired difference. Lines are named by run.
    """
    names = list(runs)
    if not names:
        raise ValueError("paired_runs_chart: no workers to plot")
    colors = _colors(names, colors)
    values = paired_run_values(runs)
    keys = list(values)
    folds = any(fold for _, fold in keys)
    shared = "a training seed and fold" if folds else "a training seed"
    finite = [v for row in values.values() for v in row if math.isfinite(v)]
    named = len(keys) <= PAIRED_RUN_LABELS and len(keys) > 1 and bool(finite)
    title = f"Each line joins runs that share {shared}: same starting weights, batches and augmentation"
    with _figure(4.6, title) as figure:
        figure.suptitle(title, fontsize=12)  # a point smaller than the others': it fits 1100 px with folds too
        axes = figure.add_subplot()
        middle = float(np.mean(finite)) if finite else 0.5
        low, high = (min(finite), max(finite)) if finite else (0.5, 0.5)
        span = max(high - low, 0.01)  # equal runs (a null worker) still get a readable axis
        bottom, top = (low + high - span) / 2 - 0.1 * span, (low + high + span) / 2 + 0.1 * span
        labels: list[tuple[tuple[str, str], int, float]] = []  # (run, column of its last dot, its height)
        for key in keys:
            row = values[key]
            axes.plot(range(len(names)), row, color="#A8A8A8", linewidth=0.9, zorder=1)
            drawn = [x for x, v in enumerate(row) if math.isfinite(v)]
            if named and drawn:
                labels.append((key, drawn[-1], row[drawn[-1]]))
        for x, name in enumerate(names):
            column = [row[x] for row in values.values() if math.isfinite(row[x])]
            if not column:
                axes.text(x, middle, "n/a", ha="center", va="center", color=REFERENCE)
                continue
            axes.scatter([x] * len(column), column, s=40, color=colors[name], edgecolors="white", linewidths=0.7,
                         zorder=3)
            mean = float(np.mean(column))
            axes.hlines(mean, x - 0.2, x + 0.2, color=colors[name], linewidth=2.8, zorder=2)
            axes.annotate(f"mean {mean:.3f}", (x - 0.2, mean), xytext=(-4, 0), textcoords="offset points",
                          ha="right", va="center", fontsize=8.5, fontweight="bold", zorder=4,
                          bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})
        # Names beside each line's last dot, stacked apart (the axis is about 3 in tall: 8 pt is 0.04 of it).
        heights = _stacked([y for _, _, y in labels], 0.045 * (top - bottom))
        for (key, x, y), height in zip(labels, heights, strict=True):
            moved = height != y  # a dotted leader to a name pushed off its dot's height
            axes.annotate(_run_name(key), (x, y), xytext=(14, height), textcoords=("offset points", "data"),
                          va="center", fontsize=8, color=REFERENCE,
                          arrowprops={"arrowstyle": "-", "color": "#B0B0B0", "linewidth": 0.6, "linestyle": ":",
                                      "shrinkA": 0, "shrinkB": 4} if moved else None)
        axes.set_ylim(bottom, max([top] + [h + 0.03 * (top - bottom) for h in heights]))
        axes.set_xlim(-0.75, len(names) - 0.25 + (0.3 if labels else 0.0))
        axes.set_xticks(range(len(names)), names)
        axes.grid(axis="x", visible=False)
        axes.ticklabel_format(axis="y", useOffset=False)  # 0.8225, not +8e-1 and 0.0225
        axes.set_ylabel("test macro AUROC")
        handles = [
            Line2D([], [], linestyle="none", marker="o", markersize=6.5, color="#777777", markeredgecolor="white",
                   label="one run (every run scores the same test images)"),
            Line2D([], [], color="#555555", linewidth=2.8, label="the worker's mean over runs"),
            Line2D([], [], color="#A8A8A8", linewidth=0.9, label=f"runs that share {shared}"),
        ]
        figure.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
    return _png(figure)
