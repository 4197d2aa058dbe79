"""The report's figures, drawn with matplotlib from plain data and returned as PNG bytes.

Every figure is 1100 px wide (11 in at 100 dpi), the width of the HTML report, so it reads at 100%
zoom. Figures are `matplotlib.figure.Figure` objects drawn by the Agg canvas, never registered with
pyplot: no global backend switch and nothing to close. Style settings live in an `rc_context`, so a
user's matplotlibrc changes nothing and the same inputs give the same PNG bytes (no Software tag).
Each worker keeps one colour in every figure: pass `colors=worker_colors(all_workers)` to each.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
from matplotlib.artist import Artist
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

if TYPE_CHECKING:  # the rc keys as matplotlib types them (a Literal of every key)
    from matplotlib.typing import RcKeyType

DPI = 100
WIDTH_IN = 11.0
# Okabe & Ito (2008), colour-blind safe; yellow and black last (weak on white / taken by reference
# lines). Paul Tol's "muted" scheme follows for runs with more than eight workers.
PALETTE = (
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
    "#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255", "#AA4499",
)
REFERENCE = "#6E6E6E"  # chance lines, separators
STYLE: dict[RcKeyType, Any] = {
    "font.family": "DejaVu Sans", "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
    "figure.titlesize": 13, "figure.titleweight": "bold", "legend.fontsize": 9, "xtick.labelsize": 9,
    "ytick.labelsize": 9, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.color": "#E3E3E3", "grid.linewidth": 0.8, "axes.axisbelow": True, "legend.framealpha": 0.9,
    "svg.hashsalt": "cxrbench", "path.simplify": True,
}


def worker_colors(names: Sequence[str]) -> dict[str, str]:
    """One colour per worker, assigned in sorted name order so the argument's order does not matter."""
    unique = sorted(set(names))
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(unique)}


def _value(value) -> float:
    """A float, or NaN for None, "" and anything unparsable (epochs.csv hands over strings)."""
    try:
        return float(value) if value not in (None, "") else math.nan
    except (TypeError, ValueError):
        return math.nan


def _flag(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def _text_color(background: str) -> str:
    r, g, b = to_rgb(background)
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"


@contextmanager
def _figure(height_in: float, title: str) -> Iterator[Figure]:
    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(WIDTH_IN, height_in), dpi=DPI, layout="constrained")
        figure.suptitle(title)
        yield figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    with matplotlib.rc_context(STYLE):
        figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    figure.clear()
    return buffer.getvalue()


def _colors(names: Sequence[str], colors: dict[str, str] | None) -> dict[str, str]:
    chosen = worker_colors(names)
    chosen.update({name: color for name, color in (colors or {}).items() if name in chosen})
    return chosen


def _interval(estimate: float, low, high) -> list[list[float]] | None:
    """Whisker lengths below and above the estimate, or None when the interval is unknown."""
    low, high = _value(low), _value(high)
    if not _finite(estimate, low, high):
        return None
    return [[max(estimate - low, 0.0)], [max(high - estimate, 0.0)]]


def per_label_auroc_chart(label_names: Sequence[str], workers: dict[str, dict],
                          colors: dict[str, str] | None = None) -> bytes:
    """Per-label test AUROC: one bar per worker and label, 95% CI whiskers, the macro mean last.

    `workers[name]` holds "estimate", "low" and "high", lists in label order (entries and the
    low/high lists may be None). An optional "macro" dict with the same keys gives the macro row;
    without it the row is the mean of the available labels and has no whisker.
    """
    names = list(workers)
    if not names:
        raise ValueError("per_label_auroc_chart: no workers to plot")
    colors = _colors(names, colors)
    count, width = len(label_names), len(names)
    rows = list(label_names) + ["macro mean"]
    positions = list(range(count)) + [count + 0.6]  # the gap sets the macro row apart
    table: dict[str, list[tuple[float, list | None]]] = {}
    for name in names:
        entry = workers[name]
        for key in ("estimate", "low", "high"):
            if entry.get(key) is not None and len(entry[key]) != count:
                raise ValueError(f"per_label_auroc_chart: worker {name!r} has {len(entry[key])} {key} values for "
                                 f"{count} labels ({', '.join(label_names)}); give one per label, None where unknown")
        lows, highs = entry.get("low") or [None] * count, entry.get("high") or [None] * count
        estimates = [_value(v) for v in (entry.get("estimate") or [None] * count)]
        cells = [(e, _interval(e, lo, hi)) for e, lo, hi in zip(estimates, lows, highs, strict=True)]
        macro = entry.get("macro") or {}
        finite = [e for e in estimates if math.isfinite(e)]
        mean = _value(macro.get("estimate")) if macro else (float(np.mean(finite)) if finite else math.nan)
        table[name] = cells + [(mean, _interval(mean, macro.get("low"), macro.get("high")))]
    seen = [v for cells in table.values() for e, err in cells for v in
            ([e] + ([e - err[0][0]] if err else [])) if math.isfinite(v)]
    left = math.floor(min([0.4] + seen) * 20) / 20  # a multiple of 0.05, at most 0.4
    height = max(3.0, len(rows) * (0.13 * width + 0.16) + 1.7)
    with _figure(height, "Test AUROC per label, with 95% confidence intervals") as figure:
        axes = figure.add_subplot()
        bar = 0.8 / width
        for j, name in enumerate(names):
            for row, (y, (estimate, err)) in enumerate(zip(positions, table[name], strict=True)):
                y = y - 0.4 + bar * (j + 0.5)
                if not math.isfinite(estimate):
                    axes.text(left + 0.004, y, "n/a", va="center", fontsize=8, color=REFERENCE)
                    continue
                axes.barh(y, estimate - left, height=bar * 0.92, left=left, color=colors[name])
                if err:
                    axes.errorbar(estimate, y, xerr=err, fmt="none", ecolor="#222222", elinewidth=1, capsize=2)
                if row == count:  # the macro row carries its numbers
                    end = estimate + (err[1][0] if err else 0.0)
                    if end + 0.07 < 1.0:
                        axes.text(end + 0.006, y, f"{estimate:.3f}", va="center", fontsize=8, fontweight="bold")
                    else:
                        axes.text(estimate - 0.006, y, f"{estimate:.3f}", va="center", ha="right", fontsize=8,
                                  fontweight="bold", color=_text_color(colors[name]))
        axes.axvline(0.5, color=REFERENCE, linestyle="--", linewidth=1.2)
        axes.axhline(count - 0.2, color=REFERENCE, linewidth=1)
        axes.set_yticks(positions, rows)
        axes.get_yticklabels()[-1].set_fontweight("bold")
        axes.set_ylim(positions[-1] + 0.5, -0.5)
        axes.set_xlim(left, 1.0)
        axes.grid(axis="y", visible=False)
        axes.set_xlabel("test AUROC (bar: estimate; whisker: 95% confidence interval)")
        # Above the bars, under the title (a figure legend "outside upper center" would cover the title).
        handles: list[Artist] = [Patch(color=colors[name], label=name) for name in names]
        handles.append(Line2D([], [], color=REFERENCE, linestyle="--", linewidth=1.2, label="chance (AUROC 0.5)"))
        axes.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=min(width + 1, 5),
                    frameon=False)
    return _png(figure)


def _thin_roc(fpr: np.ndarray, tpr: np.ndarray, points: int = 201) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve evaluated on a fixed grid of false positive rates (steps kept: the highest tpr at
    or below each grid fpr), plus the curve's own first point; curves already short are left alone."""
    order = np.argsort(fpr, kind="stable")
    fpr, tpr = fpr[order], np.maximum.accumulate(tpr[order])
    if fpr.size <= 2 * points:
        return fpr, tpr
    grid = np.linspace(0.0, 1.0, points)
    index = np.searchsorted(fpr, grid, side="right") - 1
    keep = index >= 0
    return np.concatenate([fpr[:1], grid[keep]]), np.concatenate([tpr[:1], tpr[index[keep]]])


def roc_curves(label_names: Sequence[str], curves: dict[str, dict[str, dict]],
               colors: dict[str, str] | None = None) -> bytes:
    """Test ROC curves, one panel per label, one curve per worker; legends give each worker's AUROC.

    `curves[label][worker]` holds "fpr" and "tpr" arrays and "auroc" (float or None). Long curves are
    thinned to about 200 points for drawing; a label without curves shows a note.
    """
    names = list(dict.fromkeys(w for label in label_names for w in curves.get(label, {})))
    colors = _colors(names, colors)
    count = max(len(label_names), 1)
    columns = min(4, math.ceil(math.sqrt(count)))
    rows = math.ceil(count / columns)
    height = rows * (WIDTH_IN / columns) * 0.86 + 1.0
    with _figure(height, "ROC curves on the test set, one panel per label (legend: worker, AUROC)") as figure:
        grid = figure.subplots(rows, columns, squeeze=False, sharex=True, sharey=True)
        for index, axes in enumerate(grid.flat):
            if index >= len(label_names):
                axes.set_visible(False)
                continue
            label = label_names[index]
            axes.plot([0, 1], [0, 1], linestyle="--", color=REFERENCE, linewidth=0.9)
            drawn = 0
            for name in names:
                curve = curves.get(label, {}).get(name)
                if not curve or curve.get("fpr") is None or curve.get("tpr") is None:
                    continue
                fpr, tpr = np.asarray(curve["fpr"], dtype=float), np.asarray(curve["tpr"], dtype=float)
                finite = np.isfinite(fpr) & np.isfinite(tpr)
                if fpr.shape != tpr.shape or not finite.any():
                    continue
                fpr, tpr = _thin_roc(fpr[finite], tpr[finite])
                auroc = _value(curve.get("auroc"))
                text = f"{auroc:.3f}" if math.isfinite(auroc) else "n/a"
                axes.plot(fpr, tpr, color=colors[name], linewidth=1.5, label=f"{name}  {text}")
                drawn += 1
            if drawn:
                axes.legend(loc="lower right", fontsize=8.5, handlelength=1.2, borderpad=0.3, labelspacing=0.25)
            else:
                axes.text(0.5, 0.55, "no curve\n(one class only?)", ha="center", va="center", color=REFERENCE)
            axes.set_title(label, fontsize=10, fontweight="bold")
            axes.set_xlim(0, 1)
            axes.set_ylim(0, 1.01)
            axes.set_aspect("equal")
            axes.set_xticks([0, 0.5, 1], ["0", "0.5", "1"])
            axes.set_yticks([0, 0.5, 1], ["0", "0.5", "1"])
            # Tick labels where no panel sits below / to the left (unused panels are hidden).
            axes.tick_params(labelbottom=index + columns >= len(label_names), labelleft=index % columns == 0)
        figure.supxlabel("false positive rate (1 − specificity)")
        figure.supylabel("true positive rate (sensitivity)")
    return _png(figure)


LEARNING_PANELS = (
    ("train_loss", "Training loss", "binary cross-entropy"),
    ("validation_loss", "Validation loss", "binary cross-entropy"),
    ("validation_macro_auroc", "Validation macro AUROC", "macro AUROC"),
    ("learning_rate", "Learning rate", "learning rate (log scale)"),
)


def _runs(rows: Sequence[dict]) -> dict[str, dict[str, list[dict]]]:
    """rows grouped by worker, then run, each run sorted by epoch."""
    grouped: dict[str, dict[str, list[dict]]] = {}
    for row in rows:
        epoch = _value(row.get("epoch"))
        if not math.isfinite(epoch):
            continue
        by_run = grouped.setdefault(str(row["worker"]), {})
        by_run.setdefault(str(row.get("run") or ""), []).append({**row, "epoch": int(epoch)})
    for runs in grouped.values():
        for run in runs.values():
            run.sort(key=lambda r: r["epoch"])
    return grouped


def _mean_by_epoch(runs: list[list[dict]], key: str, geometric: bool) -> tuple[list[int], list[float]]:
    epochs = sorted({r["epoch"] for run in runs for r in run})
    means = []
    for epoch in epochs:
        values = np.array([_value(r.get(key)) for run in runs for r in run if r["epoch"] == epoch])
        values = values[np.isfinite(values) & ((values > 0) if geometric else True)]
        means.append(math.nan if values.size == 0
                     else float(np.exp(np.log(values).mean()) if geometric else values.mean()))
    return epochs, means


def learning_curves(rows: Sequence[dict], colors: dict[str, str] | None = None) -> bytes:
    """Training loss, validation loss, validation macro AUROC and learning rate per epoch.

    `rows` are epoch-log rows (worker, run, epoch, train_loss, validation_loss,
    validation_macro_auroc, learning_rate, best, lr_changed). With several runs per worker each run
    is drawn thin and their mean thick; stars mark the chosen checkpoints, triangles the epochs after
    which the learning rate changed.
    """
    grouped = _runs(rows)
    colors = _colors(list(grouped), colors)
    several = any(len(runs) > 1 for runs in grouped.values())
    title = "Training curves per epoch" + (" (thick: mean over runs; thin: single runs)" if several else "")
    moves: set[str] = set()
    with _figure(7.6, title) as figure:
        panels = figure.subplots(2, 2, sharex=True).flat
        for axes, (key, heading, unit) in zip(panels, LEARNING_PANELS, strict=True):
            geometric = key == "learning_rate"
            for order, (name, runs) in enumerate(grouped.items()):
                color = colors[name]
                # Schedules often coincide: nested widths (first worker widest) keep every colour visible.
                nested = 1.6 * (len(grouped) - 1 - order) if geometric else 0.0
                for run in runs.values():
                    x = [r["epoch"] for r in run]
                    y = [_value(r.get(key)) for r in run]
                    if len(runs) > 1:
                        axes.plot(x, y, color=color, linewidth=1, alpha=0.35)
                    if key in ("validation_loss", "validation_macro_auroc"):
                        best = [(r["epoch"], _value(r.get(key))) for r in run if _flag(r.get("best"))]
                        for epoch, value in best:
                            if math.isfinite(value):
                                axes.plot(epoch, value, marker="*", markersize=15, color=color,
                                          markeredgecolor="black", markeredgewidth=0.8, zorder=4)
                    if geometric:
                        moves |= _mark_rate_changes(axes, run, color, 9 + 1.8 * nested)
                x, y = _mean_by_epoch(list(runs.values()), key, geometric)
                axes.plot(x, y, color=color, linewidth=2.4 + nested, marker="o", markersize=3.5 + nested, label=name)
            axes.set_title(heading)
            axes.set_ylabel(unit)
            if geometric:
                rates = [v for r in rows if math.isfinite(v := _value(r.get(key))) and v > 0]
                if rates and min(rates) == max(rates):  # one rate throughout: a flat line needs explicit limits
                    axes.set_ylim(rates[0] / 3, rates[0] * 3)
                axes.set_yscale("log")
                axes.margins(y=0.12)
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        for axes in list(figure.axes)[2:]:
            axes.set_xlabel("epoch")
        handles = [Line2D([], [], color=colors[name], linewidth=2.4, label=name) for name in grouped]
        if several:
            handles.append(Line2D([], [], color="#555555", linewidth=1, alpha=0.5, label="single run"))
        handles.append(Line2D([], [], linestyle="none", marker="*", markersize=13, color="#BBBBBB",
                              markeredgecolor="black", label="chosen checkpoint (lowest validation loss)"))
        for marker, text in (("v", "learning rate lowered after this epoch"),
                             ("^", "learning rate raised after this epoch")):
            if marker in moves:
                handles.append(Line2D([], [], linestyle="none", marker=marker, markersize=8, color="white",
                                      markeredgecolor="black", label=text))
        figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), frameon=False)
    return _png(figure)


def _mark_rate_changes(axes, run: list[dict], color: str, size: float) -> set[str]:
    """Triangles on the learning-rate panel at each epoch after which the rate changed; returns the
    markers used ("v" lowered, "^" raised; "v" when the next epoch is not logged)."""
    used = set()
    for here, after in zip(run, run[1:] + [None], strict=True):
        rate = _value(here.get("learning_rate"))
        if not _flag(here.get("lr_changed")) or not (math.isfinite(rate) and rate > 0):
            continue
        marker = "^" if after is not None and _value(after.get("learning_rate")) > rate else "v"
        axes.plot(here["epoch"], rate, linestyle="none", marker=marker, markersize=size, color="white",
                  markeredgecolor=color, markeredgewidth=1.8, zorder=4)
        used.add(marker)
    return used


THROUGHPUT_PANELS = (
    ("train", "training, end to end"), ("compute", "training, worker compute"), ("predict", "prediction")
)


def throughput_bars(workers: dict[str, dict], colors: dict[str, str] | None = None) -> bytes:
    """Images per second for each worker: training end to end, the worker's own compute, prediction.

    `workers[name]` holds "train", "compute" and "predict" with optional "<key>_low"/"<key>_high"
    (spread across epochs or runs); None or NaN leaves a bar out ("n/a"). Each measure has its own
    axis, as prediction is often an order of magnitude faster than training.
    """
    names = list(workers)
    if not names:
        raise ValueError("throughput_bars: no workers to plot")
    colors = _colors(names, colors)
    height = max(2.6, 0.5 * len(names) + 1.7)
    title = "Throughput in images per second (whisker: spread across epochs and runs)"
    with _figure(height, title) as figure:
        panels = figure.subplots(1, 3, sharey=True)
        for axes, (key, heading) in zip(panels, THROUGHPUT_PANELS, strict=True):
            ends = [0.0]
            for y, name in enumerate(names):
                entry = workers[name]
                value = _value(entry.get(key))
                if not math.isfinite(value):
                    axes.text(0, y, " n/a", va="center", fontsize=9, color=REFERENCE)
                    continue
                err = _interval(value, entry.get(f"{key}_low"), entry.get(f"{key}_high"))
                axes.barh(y, value, height=0.7, color=colors[name])
                if err:
                    axes.errorbar(value, y, xerr=err, fmt="none", ecolor="#222222", elinewidth=1, capsize=3)
                end = value + (err[1][0] if err else 0.0)
                ends.append(end)
                text = f"{value:,.0f}" if value >= 100 else f"{value:.1f}"
                axes.annotate(text, (end, y), xytext=(4, 0), textcoords="offset points", va="center",
                              fontsize=9, fontweight="bold")
            top = max(ends)
            if top > 0:
                axes.set_xlim(0, top * 1.28)
                if top >= 10:  # thousands separated, as in the labels; small rates keep their decimals
                    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
            else:
                axes.set_xticks([])
            axes.set_title(heading)
            axes.set_xlabel("images per second")
            axes.grid(axis="y", visible=False)
        panels[0].set_yticks(range(len(names)), names)
        panels[0].set_ylim(len(names) - 0.5, -0.5)
    return _png(figure)
