"""Model cards: what a registered model is, how it was made and how well it did, read from its run directory.

One card per finished run (worker x training seed x fold) that kept its checkpoint
(`models/<worker>/<run>/model.safetensors`). Everything on it is read back from the run directory, so the
registry says exactly what the report says. The test interval is the patient bootstrap of this run alone:
it shows the test set's sampling noise, not training noise (the benchmark's verdicts cover both).
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrbench_worker.worker_labels import key_label, safe_label
from harness.evaluation.statistics import compare_workers

BOOTSTRAP_RESAMPLES = 1000


@dataclass(frozen=True)
class RunModel:
    """A finished run's kept model in a run directory, with its card."""

    worker: str  # the label the run used, e.g. "pytorch" or "keras@3.14.0"
    run_key: str  # e.g. "pytorch/seed1"
    weights: Path
    card: dict

    @property
    def validation_macro_auroc(self) -> float:
        value = self.card["validation"]["macro_auroc"]
        return float("nan") if value is None else float(value)


def registered_name(architecture: str, worker: str) -> str:
    """`cxrbench-<architecture>-<worker>`, the version pin written as `-v3.14.0` (MLflow names allow no `@`)
    and a variant as `-jax` (`keras[jax]@3.14.0` -> `cxrbench-resnet50-keras-jax-v3.14.0`)."""
    return f"cxrbench-{architecture}-{key_label(worker)}"


def _validation_auroc(run_dir: Path, worker: str, seed: int, fold, best_epoch: int | None) -> float | None:
    """The validation macro AUROC of the kept checkpoint's epoch (epochs.csv), the rule that picks a champion."""
    path = run_dir / "epochs.csv"
    if not path.is_file():
        return None
    with path.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["worker"] == worker and row["seed"] == str(seed)
                and row["fold"] == ("" if fold is None else str(fold))]
    chosen = [row for row in rows if best_epoch is not None and row["epoch"] == str(best_epoch)] or rows[-1:]
    value = chosen[0].get("validation_macro_auroc") if chosen else None
    return None if value in (None, "") else float(value)


def _test_section(run_dir: Path, worker: str, result: dict, label_names: list[str]) -> dict:
    """The run's test metrics, with 95% patient-bootstrap intervals of this run alone."""
    labels = np.load(run_dir / "labels" / "test.npy")
    patients = np.asarray(json.loads((run_dir / "labels" / "samples.json").read_text())["test"]["patient_ids"])
    logits = np.load(run_dir / result["logits"] / "test.npy")
    intervals = compare_workers({worker: [logits]}, labels, patients, label_names, resamples=BOOTSTRAP_RESAMPLES,
                                run_keys=[(result["seed"], result.get("fold"))])["workers"][worker]
    test = result["test"]
    return {
        "images": test["samples"],
        "macro_auroc": intervals["macro_auroc"],
        "macro_auprc": intervals["macro_auprc"],
        "auroc": intervals["auroc"],
        "f1_at_validation_thresholds": (test.get("at_validation_thresholds") or {}).get("f1"),
        "interval": f"95% patient bootstrap ({BOOTSTRAP_RESAMPLES} resamples) of this run's test set: "
                    "test-set sampling noise only, not training noise",
    }


def _parity(run_dir: Path, worker: str) -> dict | None:
    path = run_dir / "parity.json"
    if not path.is_file():
        return None
    parity = json.loads(path.read_text())
    workers = [count["worker"] for count in parity.get("counts", [])]
    return {"passed": parity.get("passed"), "precision": parity.get("precision"), "workers": workers,
            "included": worker in workers}


def run_models(run_dir: Path) -> list[RunModel]:
    """Every finished run of `run_dir` that kept its model, in the study's order, each with its card.

    ValueError (naming the folder) when it is no run directory or no run kept a model (a run made
    before the registry existed).
    """
    if not (run_dir / "run.json").is_file():
        raise ValueError(f"{run_dir}: not a run directory (no run.json)")
    record = json.loads((run_dir / "run.json").read_text())
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise ValueError(f"{run_dir}: no finished run (no metrics.json)")
    config, data = record["config"], record["data"]
    label_names = list(data["label_names"])
    found = []
    for worker, summary in json.loads(metrics_path.read_text())["workers"].items():
        reported = record["workers"].get(worker, {}).get("reported", {})
        for result in summary["runs"]:
            if not result.get("model") or not (run_dir / result["model"]).is_file():
                continue
            weights = run_dir / result["model"]
            folder = Path(result["model"]).parent.relative_to(f"models/{safe_label(worker)}").as_posix()
            run_key = f"{worker}/{'run' if folder == '.' else folder}"
            test = result["test"]
            thresholds = (test.get("at_validation_thresholds") or {}).get("thresholds") or {}
            card = {
                "worker": worker,
                "architecture": config["architecture"],
                "image_size": int(data["image_size"]),
                "labels": label_names,
                "thresholds": [float(thresholds.get(name, 0.5)) for name in label_names],
                "thresholds_rule": "per finding, the probability maximising F1 on the validation predictions of "
                                   "the kept checkpoint (0.5 where validation has no positive)",
                "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
                "precision": config.get("precision", "fp32"),
                "framework_versions": dict(reported.get("framework_versions", {})),
                "device": reported.get("device"),
                "test": _test_section(run_dir, worker, result, label_names),
                "validation": {"macro_auroc": _validation_auroc(run_dir, worker, result["seed"], result.get("fold"),
                                                                result["schedule"].get("best_epoch")),
                               "best_epoch": result["schedule"].get("best_epoch")},
                "parity": _parity(run_dir, worker),
                "dataset": config.get("dataset"),
                "data_sha256": data.get("content_sha256"),
                "run_id": run_dir.name,
                "run_dir": str(run_dir.resolve()),
                "run": run_key,
                "seed": result["seed"],
                "fold": result.get("fold"),
                "epochs": len(result["timings"]["epoch_seconds"]),
                "commit": record["provenance"]["git"].get("commit"),
                "commit_dirty": record["provenance"]["git"].get("dirty"),
                "registered_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            found.append(RunModel(worker, run_key, weights, card))
    if not found:
        raise ValueError(f"{run_dir}: no run kept its model (models/<worker>/.../model.safetensors); run directories "
                         "made before the model registry existed have none: run the benchmark again")
    return found


def _figure(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def card_markdown(name: str, version: int | str, card: dict) -> str:
    """The card as Markdown: what the page shows and the registry's version description holds."""
    test = card["test"]
    macro = test["macro_auroc"]
    versions = ", ".join(f"{package} {version}" for package, version in sorted(card["framework_versions"].items()))
    parity = card.get("parity")
    parity_text = ("not measured" if not parity else
                   f"{'passed' if parity['passed'] else 'FAILED'} ({parity['precision']}, among "
                   f"{', '.join(parity['workers'])})")
    lines = [
        f"### {name} version {version}",
        "",
        f"- **Worker**: `{card['worker']}` ({versions or 'versions not reported'}), device {card.get('device')}",
        f"- **Network**: {card['architecture']}, {card['image_size']} x {card['image_size']} px grayscale input, "
        f"{len(card['labels'])} findings, {card['precision']}",
        f"- **Test macro AUROC**: {_figure(macro['estimate'])} [{_figure(macro['low'])}, {_figure(macro['high'])}] "
        f"on {test['images']} images ({test['interval']})",
        f"- **Validation macro AUROC** of the kept checkpoint (epoch {card['validation']['best_epoch']}): "
        f"{_figure(card['validation']['macro_auroc'])}",
        f"- **Parity** of the benchmark's workers: {parity_text}",
        f"- **Data**: {card.get('dataset')}, digest `{str(card.get('data_sha256'))[:16]}`; run `{card['run_id']}` "
        f"(`{card['run']}`, seed {card['seed']}" + (f", fold {card['fold']}" if card.get("fold") else "") + ")",
        f"- **Commit**: `{card.get('commit')}`" + (" (with uncommitted changes)" if card.get("commit_dirty") else ""),
        f"- **Weights**: neutral safetensors, SHA-256 `{card['weights_sha256']}`",
        "",
        "| finding | validation threshold | test AUROC [95% interval] |",
        "|---|---|---|",
    ]
    for label, threshold in zip(card["labels"], card["thresholds"], strict=True):
        auroc = test["auroc"].get(label, {})
        lines.append(f"| {label} | {threshold:.3f} | {_figure(auroc.get('estimate'))} "
                     f"[{_figure(auroc.get('low'))}, {_figure(auroc.get('high'))}] |")
    lines += ["", f"Thresholds: {card['thresholds_rule']}."]
    return "\n".join(lines) + "\n"


def card_json(card: dict) -> str:
    """The card as the registry stores it (`card.json`)."""
    return json.dumps(card, indent=2, sort_keys=True) + "\n"
