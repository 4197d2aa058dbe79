"""The Markdown report, built only from what a run saved (run.json, metrics.json, epochs.csv).

`harness report RUN_DIR` rescores the saved test logits with harness.metrics and rebuilds the
report, without retraining.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.cross_validation import combine_folds
from harness.metrics import evaluate
from harness.parity import parity_lines
from harness.results import RunDirectory


def _number(value, digits: int = 3) -> str:
    if value is None or value == "":
        return "n/a"
    if isinstance(value, str):
        value = float(value)
    return f"{value:.{digits}f}"


def _integer(value) -> str:
    return "n/a" if value is None else f"{int(value):,}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def _with_std(result: dict, key: str, bold: bool = False) -> str:
    """A test metric; with cross-validation, its mean +- std across folds."""
    value = _number(result["test"][key])
    value = f"**{value}**" if bold else value
    std = result.get("test_std", {}).get(key)
    return value if std is None else f"{value} ± {_number(std)}"


def _summary(run: dict, metrics: dict) -> list[str]:
    rows = []
    for name, result in metrics.items():
        reported = run["workers"].get(name, {}).get("reported", {})
        versions = reported.get("framework_versions", {})
        framework = ", ".join(f"{k} {v}" for k, v in sorted(versions.items()) if k not in ("python", "numpy")) or "n/a"
        test, efficiency, parameters = result["test"], result["efficiency"], result["parameters"]
        rows.append([
            name, framework, _with_std(result, "macro_auroc", bold=True), _with_std(result, "precision"),
            _with_std(result, "recall"), _with_std(result, "f1"), _number(efficiency["seconds_per_epoch_median"], 1),
            _number(efficiency["train_images_per_second_median"], 1), _number(efficiency["compute_images_per_second_median"], 1),
            _number(efficiency["prediction_images_per_second"], 1), _number(efficiency["first_step_seconds"], 2),
            _integer(parameters["trainable"]), _integer(parameters["non_trainable"]),
            _integer(result["model_size_bytes"]["neutral_safetensors"]),
        ])
    header = ["worker", "framework", "macro AUROC", "precision", "recall", "F1", "s/epoch", "train img/s",
              "compute img/s", "predict img/s", "first step s", "trainable params", "non-trainable", "model bytes"]
    return _table(header, rows)


def _per_label(metrics: dict, label_names: list[str]) -> list[str]:
    names = list(metrics)
    first = metrics[names[0]]["test"]
    rows = []
    def cell(name: str, label: str) -> str:
        std = metrics[name].get("test_std", {}).get("auroc", {}).get(label)
        value = _number(metrics[name]["test"]["auroc"][label])
        return value if std is None else f"{value} ± {_number(std)}"

    for label in label_names:
        rows.append([label, str(first["positives"][label])] + [cell(n, label) for n in names])
    rows.append(["**macro mean**", str(first["samples"]) + " images"] + [_with_std(metrics[n], "macro_auroc", bold=True) for n in names])
    return _table(["label", "test positives"] + names, rows)


def _folds(metrics: dict) -> list[str]:
    """Every fold's test metrics, so the spread behind each mean +- std is visible."""
    rows = []
    for name, result in metrics.items():
        for fold in result.get("folds", []):
            test = fold["test"]
            rows.append([name, str(fold["fold"]), _number(test["macro_auroc"]), _number(test["precision"]),
                         _number(test["recall"]), _number(test["f1"]), _number(fold["efficiency"]["seconds_per_epoch_median"], 1)])
    return _table(["worker", "fold", "macro AUROC", "precision", "recall", "F1", "s/epoch"], rows) if rows else []


def _data(run: dict) -> list[str]:
    data = run["data"]
    split = data["split"]
    notes = data.get("notes", {})
    lines = [
        f"- Dataset `{run['config']['dataset']}` ({notes.get('kind', 'unknown')}): {data['images']:,} images of "
        f"{data['patients']:,} patients at {data['image_size']}x{data['image_size']}, data digest `{data['content_sha256'][:16]}`.",
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
            f"{part} {facts['images']:,} images / {facts['patients']:,} patients" for part, facts in split.items()) + ".")
    if "augmentation" in data:
        lines.append(f"- Training augmentation, done once by the harness (the same bytes for every worker): {data['augmentation']}.")
    if notes.get("csv_file"):
        lists = "the official train_val_list.txt / test_list.txt" if notes.get("official_lists") else "no official lists"
        lines.append(f"- Read from `{notes['csv_file']}` ({notes.get('csv_revision')} labels), images in "
                     f"{' and '.join(f'`{layout}/`' for layout in notes.get('image_layouts', []))}, {lists}.")
    if notes.get("no_patient_ids"):
        lines.append(f"- **{notes['no_patient_ids']}.**")
    if notes.get("resized"):
        lines.append(f"- Images {notes['resized']}.")
    for key, verb in (("skipped", "Skipped"), ("converted", "Converted")):
        items = notes.get(key) or []
        if items:
            shown = "; ".join(f"`{item['where']}`: {item.get('reason') or item.get('note')}" for item in items[:10])
            more = f"; and {len(items) - 10:,} more (all in the store's meta.json)" if len(items) > 10 else ""
            lines.append(f"- {verb} {len(items):,} input(s): {shown}{more}.")
    lifted = {name: p for name, p in data.get("notes", {}).get("prevalence", {}).items() if p["used"] > p["reference"] + 1e-9}
    if lifted:
        lines.append(
            "- Synthetic data: rare labels were lifted to a floor prevalence so every label has positives to score: "
            + ", ".join(f"{name} {p['reference']:.1%} -> {p['used']:.1%}" for name, p in lifted.items()) + "."
        )
    if run["config"].get("shuffle_labels"):
        lines.append("- **Control run**: training and validation labels were shuffled across images; test labels are true. "
                     "A macro AUROC near 0.5 is the expected, correct result.")
    return lines + [""]


def _epochs(rows: list[dict]) -> list[str]:
    table = [[r["worker"], r.get("fold") or "-", r["epoch"], _number(r["train_loss"], 4), _number(r["validation_loss"], 4),
              _number(r["validation_macro_auroc"]), _number(r["seconds"], 1), _number(r["train_images_per_second"], 1)]
             for r in rows]
    return _table(["worker", "fold", "epoch", "train loss", "validation loss", "validation AUROC", "seconds", "img/s"], table)


def _provenance(run: dict, metrics: dict) -> list[str]:
    prov = run["provenance"]
    git = prov["git"]
    host = prov["host"]
    lines = [
        f"- Commit `{git['commit'] or 'unknown'}`" + (" (with uncommitted changes)" if git.get("dirty") else "") + ".",
        f"- Host: {host['cpu']}, {host['cpu_count']} cores, {host['platform']}, Python {host['python']}.",
        f"- Seed {run['config']['seed']}; harness packages: "
        + ", ".join(f"{k} {v}" for k, v in prov["harness_packages"].items()) + ".",
    ]
    for name, worker in run["workers"].items():
        reported = worker.get("reported", {})
        versions = ", ".join(f"{k} {v}" for k, v in sorted(reported.get("framework_versions", {}).items()))
        numerics = metrics.get(name, {}).get("numerics", {})
        lines.append(
            f"- `{name}` reported: {versions}; device {reported.get('device')}; threads {reported.get('threads')}; "
            f"numerics {json.dumps(numerics, sort_keys=True)}; environment lock `{worker['environment']['lock_sha256'][:16]}`."
        )
        orders = metrics.get(name, {}).get("batch_order_sha256", [])
        if orders:
            lines.append(f"  Batch order digests per epoch: " + ", ".join(f"`{d[:12]}`" for d in orders) + ".")
    digests = {tuple(result.get("batch_order_sha256", [])) for result in metrics.values()}
    if len(metrics) > 1 and len(digests) == 1:
        lines.append("- Every worker received byte-identical training batches (augmented pixels and labels) in the "
                     "same order: its echoed batch digests are equal, epoch by epoch" + (", fold by fold" if any(
                         "folds" in r for r in metrics.values()) else "") + ".")
    return lines + [""]


def render_report(run_dir: Path) -> str:
    """The report of a run directory as Markdown."""
    directory = RunDirectory(run_dir)
    run = directory.read_run()
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text())["workers"] if metrics_path.exists() else {}
    config = run["config"]
    lines = [
        f"# {config['architecture']} on {config['dataset']}, seed {config['seed']}",
        "",
        f"Run `{run_dir.name}`: **{run['status']}**, started {run['started']}, {config['epochs']} epochs, batch "
        f"{config['batch_size']}, Adam lr {config['learning_rate']}, {config['precision']}, {config['image_size']} px.",
        "",
    ]
    if run.get("error"):
        lines += [f"> Error: {run['error']}", ""]
    lines += ["## Data", ""] + _data(run)
    if metrics:
        lines += ["## Results on the held-out test patients", ""] + _summary(run, metrics)
        lines += ["Metrics computed by the harness from logits (precision, recall and F1 at 0.5 on sigmoid "
                  "outputs, averaged over labels). Timing: median over epochs; the first step includes warm-up.", ""]
        lines += ["## AUROC per label", ""] + _per_label(metrics, run["data"]["label_names"])
        per_fold = _folds(metrics)
        if per_fold:
            lines += ["## Cross-validation folds", "", "Test metrics of each fold (the means and standard deviations "
                      "above are taken across these).", ""] + per_fold
    parity = directory.read_parity()
    if parity:
        lines += ["## Parity: the same network in every framework", ""]
        start = run.get("starting_weights", {})
        if start:
            lines += [f"Every worker started from the same weights: {start['description']} "
                      f"(neutral safetensors, sha256 `{start['sha256'][:16]}`).", ""]
        lines += parity_lines(parity) + [""]
    epochs = directory.read_epochs()
    if epochs:
        lines += ["## Epochs", ""] + _epochs(epochs)
    lines += ["## Provenance", ""] + _provenance(run, metrics)
    return "\n".join(lines)


def rescore(run_dir: Path) -> list[str]:
    """Recompute each worker's test metrics in metrics.json from its saved logits; returns the workers."""
    directory = RunDirectory(run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.exists():
        return []
    saved = json.loads(metrics_path.read_text())
    labels = np.load(run_dir / "labels" / "test.npy")
    label_names = tuple(directory.read_run()["data"]["label_names"])
    rescored = []
    for name, result in saved["workers"].items():
        if "folds" in result:
            for fold in result["folds"]:
                fold["test"] = evaluate(np.load(run_dir / "logits" / name / f"fold{fold['fold']}" / "test.npy"), labels, label_names)
            saved["workers"][name] = combine_folds(result["folds"])
            rescored.append(name)
            continue
        logits_path = run_dir / "logits" / name / "test.npy"
        if logits_path.exists():
            result["test"] = evaluate(np.load(logits_path), labels, label_names)
            rescored.append(name)
    directory.write_metrics(saved)
    return rescored


def write_report(run_dir: Path) -> Path:
    """Write report.md into the run directory; returns its path."""
    path = run_dir / "report.md"
    path.write_text(render_report(run_dir))
    return path
