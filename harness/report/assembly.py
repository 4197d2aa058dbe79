"""The report, built only from what a run saved: report.md, a self-contained report.html, plots/.

`harness report RUN_DIR` rescores every run's saved logits with harness.evaluation.metrics, recomputes the
intervals and the comparison over paired runs, and rebuilds the report, without retraining.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.evaluation.metrics import best_f1_thresholds, evaluate
from harness.evaluation.run_summary import combine_runs
from harness.records.run_directory import RunDirectory
from harness.report.beyond_auroc import beyond_auroc, beyond_auroc_lines
from harness.report.conditions import conditions_lines, unequal_banner
from harness.report.figures import PAIRED_RUNS, write_figures
from harness.report.html import render_html
from harness.report.localization import GALLERY, localization_lines, read_summary, summarise_run
from harness.report.parity_tables import parity_lines
from harness.report.sections import (
    accuracy_table,
    differences_section,
    efficiency_table,
    epochs_table,
    framework_names,
    frameworks_line,
    per_label_table,
    provenance_lines,
    runs_table,
    schedule_lines,
)
from harness.report.significance import compare_run


def _data(run: dict) -> list[str]:
    data = run["data"]
    split = data["split"]
    notes = data.get("notes", {})
    lines = [
        f"- Dataset `{run['config']['dataset']}` ({notes.get('kind', 'unknown')}): {data['images']:,} images of "
        f"{data['patients']:,} patients at {data['image_size']}x{data['image_size']}, "
        f"data digest `{data['content_sha256'][:16]}`.",
    ]
    if "test_source" in data:
        lines.append(f"- Held-out test set: {data['test_source']}; validation: {data['validation_source']}. "
                     "The test set is never used for training or model selection.")
    folds = data.get("folds")
    if folds:
        lines.append(f"- {len(folds)}-fold cross-validation grouped by patient, stratified by label: " + "; ".join(
            f"fold {k} trains on {f['train']['images']:,} and validates on {f['validation']['images']:,} images"
            for k, f in enumerate(folds, start=1)) + f"; test {split['test']['images']:,} images in every fold.")
    else:
        lines.append("- Patient-wise split: " + ", ".join(
            f"{part} {facts['images']:,} images / {facts['patients']:,} patients"
            for part, facts in split.items()) + ".")
    if "augmentation" in data:
        lines.append("- Training augmentation, done once by the harness (the same bytes for every worker): "
                     f"{data['augmentation']}.")
    if notes.get("csv_file"):
        lists = ("the official train_val_list.txt / test_list.txt" if notes.get("official_lists")
                 else "no official lists")
        lines.append(f"- Read from `{notes['csv_file']}` ({notes.get('csv_revision')} labels), images in "
                     f"{' and '.join(f'`{layout}/`' for layout in notes.get('image_layouts', []))}, {lists}.")
    if notes.get("no_patient_ids"):
        lines.append(f"- **{notes['no_patient_ids']}.**")
    if notes.get("bounding_boxes"):
        lines.append(f"- Bounding boxes: {notes['bounding_boxes']}.")
    if notes.get("resized"):
        lines.append(f"- Images {notes['resized']}.")
    for key, verb in (("skipped", "Skipped"), ("converted", "Converted")):
        items = notes.get(key) or []
        if items:
            shown = "; ".join(f"`{item['where']}`: {item.get('reason') or item.get('note')}" for item in items[:10])
            more = f"; and {len(items) - 10:,} more (all in the store's meta.json)" if len(items) > 10 else ""
            lines.append(f"- {verb} {len(items):,} input(s): {shown}{more}.")
    lifted = {name: p for name, p in data.get("notes", {}).get("prevalence", {}).items()
              if p["used"] > p["reference"] + 1e-9}
    if lifted:
        lines.append(
            "- Synthetic data: rare labels were lifted to a floor prevalence so every label has positives to score: "
            + ", ".join(f"{name} {p['reference']:.1%} -> {p['used']:.1%}" for name, p in lifted.items()) + "."
        )
    if run["config"].get("shuffle_labels"):
        lines.append("- **Control run**: training and validation labels were shuffled across images; "
                     "test labels are true. A macro AUROC near 0.5 is the expected, correct result.")
    return lines + [""]


def _title(config: dict) -> str:
    return f"{config['architecture']} on {config['dataset']}, seed {config['seed']}"


def render_report(run_dir: Path, figures: list[tuple[str, str, str]] | None = None) -> str:
    """The report of a run directory as Markdown; `figures` are (title, relative path, caption)."""
    directory = RunDirectory(run_dir)
    run = directory.read_run()
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text())["workers"] if metrics_path.exists() else {}
    significance = directory.read_significance()
    config = run["config"]
    seeds = config.get("seeds") or [config["seed"]]
    runs = (f"{len(seeds)} training seeds x {config['folds']} folds" if len(seeds) > 1 or config["folds"] > 1
            else "one run per worker")
    lines = [
        f"# {_title(config)}",
        "",
        f"Run `{run_dir.resolve().name}`: **{run['status']}**, started {run['started']}; "
        f"up to {config['epochs']} epochs, batch {config['batch_size']}, Adam lr {config['learning_rate']}, "
        f"{config['precision']}, {config['image_size']} px; {runs}.",
        "",
    ]
    lines += unequal_banner(run.get("preflight"))
    if run.get("error"):
        lines += [f"> Error: {run['error']}", ""]
    if metrics:
        lines += ["## Headline", "", "**Table 1: accuracy on the held-out test patients** (computed by the harness "
                  "from logits; mean ± std over runs where there are several; the interval resamples patients).", ""]
        frameworks = framework_names(run, metrics)
        lines += accuracy_table(metrics, significance, frameworks) + frameworks_line(run, metrics)
        lines += ["**Table 2: efficiency** (median over epochs and runs, range in brackets; throughput leaves out "
                  "each epoch's first step, shown as warm-up).", ""]
        lines += (efficiency_table(metrics, run.get("harness_ceiling"), frameworks)
                  + conditions_lines(run.get("preflight"), config))
        figures = list(figures or [])
        if significance and len(metrics) > 1:  # the figure of every run goes with the comparison it shows
            paired = next((figure for figure in figures if figure[1] == PAIRED_RUNS), None)
            figures = [figure for figure in figures if figure is not paired]
            lines += ["## Which differences are real", ""] + differences_section(significance, paired)
        lines += beyond_auroc_lines(run_dir)
        gallery = next((figure for figure in figures if figure[1] == GALLERY), None)
        figures = [figure for figure in figures if figure is not gallery]
        lines += localization_lines(read_summary(run_dir), gallery)
        if figures:
            lines += ["## Figures", ""]
        for title, path, caption in figures:
            lines += [f"### {title}", "", f"![{title}]({path})", "", caption, ""]
        lines += ["## AUROC per label", ""] + per_label_table(metrics, run["data"]["label_names"], significance)
        per_run = runs_table(metrics)
        if per_run:
            lines += ["## Runs", "", "Test metrics of each run (the means and standard deviations above are taken "
                      "across these; every run scores the same test images).", ""] + per_run
        lines += ["## Training decisions", ""] + schedule_lines(config, metrics)
    lines += ["## Data", ""] + _data(run)
    parity = directory.read_parity()
    if parity:
        lines += ["## Parity: the same network in every framework", ""]
        start = run.get("starting_weights", {})
        if start:
            per_seed = "; each training seed has its own, the same for every worker" if start.get("per_seed") else ""
            lines += [f"Every worker started from the same weights: {start['description']} "
                      f"(neutral safetensors, sha256 `{start['sha256'][:16]}`){per_seed}.", ""]
        lines += parity_lines(parity) + [""]
    epochs = directory.read_epochs()
    if epochs:
        lines += ["## Epochs", ""] + epochs_table(epochs)
    lines += ["## Provenance", ""] + provenance_lines(run, metrics)
    return "\n".join(lines)


def rescore_run(run_dir: Path, run: dict, labels: np.ndarray, label_names: tuple[str, ...]) -> dict:
    """One run's test metrics from its saved logits, thresholds again from its kept epoch's validation logits."""
    folder = run_dir / run["logits"]
    best = run["schedule"]["best_epoch"] or run["schedule"]["epochs_trained"]
    split = run_dir / "labels" / (f"fold{run['fold']}" if run.get("fold") else "")
    thresholds, _ = best_f1_thresholds(np.load(folder / f"validation_epoch_{best:03d}.npy"),
                                       np.load(split / "validation.npy"))
    return evaluate(np.load(folder / "test.npy"), labels, label_names, thresholds)


def rescore(run_dir: Path, bootstrap: int = 1000, cam_threshold: str = "tuned",
            cam_components: str = "all") -> list[str]:
    """Recompute metrics.json (and significance.json, and localization.json from the saved maps) from the saved
    logits and epoch records; returns the workers rescored."""
    directory = RunDirectory(run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.exists():
        return []
    saved = json.loads(metrics_path.read_text())
    labels = np.load(run_dir / "labels" / "test.npy")
    record = directory.read_run()
    label_names = tuple(record["data"]["label_names"])
    for name, result in saved["workers"].items():
        for run in result["runs"]:
            run["test"] = rescore_run(run_dir, run, labels, label_names)
        saved["workers"][name] = combine_runs(result["runs"])
    saved.update(beyond_auroc(run_dir, saved["workers"]))  # churn and time to target, old run directories too
    directory.write_metrics(saved)
    if bootstrap:
        directory.write_significance(compare_run(run_dir, bootstrap, record["config"]["seed"]))
    summarise_run(run_dir, bootstrap, record["config"]["seed"], cam_threshold, cam_components)
    return list(saved["workers"])


def write_report(run_dir: Path) -> Path:
    """Write plots/, report.md and report.html into the run directory; returns report.md's path."""
    figures = write_figures(run_dir)
    markdown = render_report(run_dir, figures)
    path = run_dir / "report.md"
    path.write_text(markdown)
    title = _title(RunDirectory(run_dir).read_run()["config"])
    (run_dir / "report.html").write_text(render_html(markdown, run_dir, title))
    return path
