"""The report's figures, drawn from a run's saved files into plots/ (harness.report.plots does the drawing)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from harness.evaluation.metrics import roc_points
from harness.records.run_directory import RunDirectory
from harness.report import plots
from harness.report.localization import gallery_figure
from harness.report.paired_runs_plot import paired_runs_chart

PAIRED_RUNS = "plots/paired_runs.png"  # placed in the report's section on differences, the others together


def _per_label(metrics: dict, significance: dict | None, label_names: list[str]) -> dict:
    """Per worker: test AUROC per label then the macro mean, with the bootstrap interval where known."""
    chart = {}
    for name, result in metrics.items():
        intervals = (significance or {}).get("workers", {}).get(name, {})
        entries = [intervals.get("auroc", {}).get(label, {}) for label in label_names]
        macro = intervals.get("macro_auroc", {})
        chart[name] = {
            "estimate": [result["test"]["auroc"][label] for label in label_names],
            "low": [entry.get("low") for entry in entries],
            "high": [entry.get("high") for entry in entries],
            "macro": {"estimate": result["test"]["macro_auroc"], "low": macro.get("low"), "high": macro.get("high")},
        }
    return chart


def _roc(run_dir: Path, metrics: dict, label_names: list[str]) -> dict:
    """ROC points of each worker's first run on the test set, per label."""
    labels = np.load(run_dir / "labels" / "test.npy")
    curves: dict[str, dict] = {label: {} for label in label_names}
    for name, result in metrics.items():
        logits = np.load(run_dir / result["runs"][0]["logits"] / "test.npy")
        for label, curve in roc_points(logits, labels, label_names).items():
            curves[label][name] = curve
    return curves


def _learning_rows(epochs: list[dict], metrics: dict) -> list[dict]:
    """epochs.csv rows as numbers, marked with the kept checkpoint and the rate reductions."""
    kept = {(name, str(run["seed"]), str(run.get("fold") or "")): run["schedule"]["best_epoch"]
            for name, result in metrics.items() for run in result["runs"]}
    several = any(len(result["runs"]) > 1 for result in metrics.values())
    rows = []
    for row in epochs:
        value = lambda key, row=row: float(row[key]) if row.get(key) not in (None, "") else None  # noqa: E731
        key = (row["worker"], row.get("seed", ""), row.get("fold", ""))
        run = f"seed {row.get('seed')}" + (f" fold {row['fold']}" if row.get("fold") else "") if several else ""
        rows.append({
            "worker": row["worker"], "run": run, "epoch": int(row["epoch"]),
            "train_loss": value("train_loss"), "validation_loss": value("validation_loss"),
            "validation_macro_auroc": value("validation_macro_auroc"), "learning_rate": value("learning_rate"),
            "best": kept.get(key) == int(row["epoch"]),
            "lr_changed": row.get("next_learning_rate") not in (None, "")
                          and value("next_learning_rate") != value("learning_rate"),
        })
    return rows


def _throughput(metrics: dict) -> dict:
    bars: dict[str, dict[str, Any]] = {}
    for name, result in metrics.items():
        efficiency = result["efficiency"]
        bars[name] = {}
        for short, key in (("train", "train_images_per_second"), ("compute", "compute_images_per_second"),
                           ("predict", "prediction_images_per_second")):
            entry = efficiency[key]
            bars[name].update({short: entry["median"], f"{short}_low": entry["min"], f"{short}_high": entry["max"]})
    return bars


def _paired_runs(metrics: dict) -> dict[str, list[dict]]:
    """Per worker: each run's seed, fold and test macro AUROC, the runs in the order they ran."""
    return {name: [{"seed": run["seed"], "fold": run.get("fold"), "macro_auroc": run["test"]["macro_auroc"]}
                   for run in result["runs"]]
            for name, result in metrics.items()}


def write_figures(run_dir: Path) -> list[tuple[str, str, str]]:
    """Draw every figure the saved files allow into run_dir/plots; returns (title, path, caption) each."""
    directory = RunDirectory(run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.exists():
        return []
    metrics = json.loads(metrics_path.read_text())["workers"]
    if not metrics:
        return []
    label_names = directory.read_run()["data"]["label_names"]
    significance = directory.read_significance()
    several = any(len(result["runs"]) > 1 for result in metrics.values())
    folds = any(run.get("fold") for result in metrics.values() for run in result["runs"])
    interval = "95% patient-bootstrap interval" if significance else "no interval (--bootstrap 0)"
    colors = plots.worker_colors(list(metrics))  # one colour per worker in every figure
    figures = [
        ("Test AUROC per label", "per_label_auroc.png",
         plots.per_label_auroc_chart(label_names, _per_label(metrics, significance, label_names), colors),
         f"Bars: test AUROC{' (mean over runs)' if several else ''}; whiskers: {interval}. The dashed line is chance."),
        ("ROC curves per label", "roc_curves.png",
         plots.roc_curves(label_names, _roc(run_dir, metrics, label_names), colors),
         "Test set, each worker's " + ("first run (first seed, fold 1)." if several else "kept checkpoint.")),
        ("Learning curves", "learning_curves.png",
         plots.learning_curves(_learning_rows(directory.read_epochs(), metrics), colors),
         "Per epoch, from epochs.csv; stars: the checkpoint kept for the test set; "
         "triangles: learning-rate reductions."),
        ("Every run, paired across workers", PAIRED_RUNS.removeprefix("plots/"),
         paired_runs_chart(_paired_runs(metrics), colors),
         "Dots: each run's test macro AUROC, on the same test images; bars: each worker's mean. The spread of a "
         f"column is training noise ({'another seed or fold' if folds else 'the same data, another seed'}); a grey "
         f"line joins the runs that share a seed{' and fold' if folds else ''} in every worker, and its slope is "
         "one paired difference."),
        ("Throughput", "throughput.png", plots.throughput_bars(_throughput(metrics), colors),
         "Images per second, median over epochs and runs; whiskers: range. "
         "Worker compute excludes the data path and transport."),
    ]
    gallery = gallery_figure(run_dir)  # placed in the report's localisation section
    if gallery is not None:
        figures.append(gallery)
    folder = run_dir / "plots"
    folder.mkdir(exist_ok=True)
    placed = []
    for title, name, png, caption in figures:
        (folder / name).write_bytes(png)
        placed.append((title, f"plots/{name}", caption))
    return placed
