"""Beyond a single number: prediction churn and time to target of a run directory, and in words.

Churn (harness.evaluation.agreement) comes from every run's saved test logits; time to target
(harness.evaluation.time_to_target) from the epoch records in epochs.csv: each epoch's validation
macro AUROC (computed by the harness from the worker's logits as the epoch ended) and its training
seconds. `harness benchmark` calls `beyond_auroc` after the last worker and `harness report`
when it rescores, so both write the same "churn" and "time_to_target" into metrics.json.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from harness.evaluation.agreement import RunLogits, prediction_churn
from harness.evaluation.time_to_target import RunCurve, time_to_target
from harness.records.run_directory import RunDirectory
from harness.report.paired_runs_plot import run_key
from harness.report.sections import table


def _number(text: str | None) -> float:
    return float(text) if text not in (None, "") else math.nan


def run_logits(run_dir: Path, workers: dict) -> dict[str, list[RunLogits]]:
    """Every run's test logits, per worker, in the order of metrics.json."""
    return {name: [RunLogits(run["seed"], run.get("fold"), np.load(run_dir / run["logits"] / "test.npy"))
                   for run in result["runs"]]
            for name, result in workers.items()}


def run_curves(run_dir: Path, workers: dict) -> dict[str, list[RunCurve]]:
    """Every run's validation macro AUROC and training seconds per epoch, from epochs.csv (a run with
    no rows there gets an empty curve and so never reaches the target)."""
    rows: dict[tuple[str, str, str], list[dict]] = {}
    for row in RunDirectory(run_dir).read_epochs():
        rows.setdefault((row["worker"], *run_key(row.get("seed", ""), row.get("fold"))), []).append(row)
    curves: dict[str, list[RunCurve]] = {}
    for name, result in workers.items():
        curves[name] = []
        for run in result["runs"]:
            own = rows.get((name, *run_key(run["seed"], run.get("fold"))), [])
            epochs = sorted(own, key=lambda r: int(r["epoch"]))
            curves[name].append(RunCurve(run["seed"], run.get("fold"),
                                         [_number(r["validation_macro_auroc"]) for r in epochs],
                                         [_number(r["seconds"]) for r in epochs]))
    return curves


def beyond_auroc(run_dir: Path, workers: dict) -> dict:
    """{"churn": ..., "time_to_target": ...} of a run directory whose workers' results are `workers`
    (metrics.json's "workers"), to sit beside them in metrics.json."""
    return {"churn": prediction_churn(run_logits(run_dir, workers)),
            "time_to_target": time_to_target(run_curves(run_dir, workers))}


def _percent(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}%}"


def _churn_cell(entry: dict, level: str, digits: int) -> str:
    """A mean churn, with its range over the run pairs when there are several: "4.1% (3.9–4.3%)"."""
    text = _percent(entry[f"{level}_churn"], digits)
    if entry["run_pairs"] < 2:
        return text
    return f"{text} ({_percent(entry[f'{level}_churn_min'], digits)}–{_percent(entry[f'{level}_churn_max'], digits)})"


def _churn_sentence(churn: dict) -> str:
    """E.g. "keras and pytorch disagree on 4.1% of test images; two seeds of the same framework disagree on
    3.8–4.5%." (every pair of workers named, the within-worker figures as their range over workers)."""
    measured = [entry for entry in churn["between"] if entry["image_churn"] is not None]
    text = ", ".join(f"{entry['workers'][0]} and {entry['workers'][1]} "
                     + ("disagree on {} of test images" if number == 0 else "on {}").format(
                         _percent(entry["image_churn"], 1))
                     for number, entry in enumerate(measured))
    within = {name: entry["image_churn"] for name, entry in churn["within"].items() if entry["image_churn"] is not None}
    if not within:
        seeds = "two seeds of the same framework were not compared (one training seed; run with several --seeds)"
    elif len(within) == 1:
        ((name, value),) = within.items()
        seeds = f"two seeds of {name} disagree on {_percent(value, 1)}"
    else:
        low, high = min(within.values()), max(within.values())
        seeds = f"two seeds of the same framework disagree on {_percent(low, 1)}–{_percent(high, 1)}"
    if text:
        return f"{text}; {seeds}."
    return f"{seeds[0].upper()}{seeds[1:]}" + (" of test images." if within else ".")


def churn_lines(churn: dict) -> list[str]:
    """The churn table (every pair of workers, then every worker with itself) and one sentence."""
    rows = [[f"{a} vs {b}", "between workers (same seed and fold)", _churn_cell(entry, "image", 1),
             _churn_cell(entry, "label", 2), str(entry["run_pairs"])]
            for entry in churn["between"] for a, b in [entry["workers"]]]
    rows += [[f"{name} vs {name}", "within, across training seeds (same fold)",
              _churn_cell(entry, "image", 1) if entry["image_churn"] is not None else f"n/a ({entry['note']})",
              _churn_cell(entry, "label", 2), str(entry["run_pairs"])]
             for name, entry in churn["within"].items()]
    labels = churn.get("labels") or "the"
    return [f"**Prediction churn.** A finding is called present when its predicted probability is at least 0.5. "
            f"Two runs disagree on an image when they call at least one of its {labels} findings differently; the "
            "image × finding column counts every single call. Two workers are compared run by run with the same "
            "training seed and fold (the same start and batches), a worker with itself across training seeds; "
            "mean over the run pairs, range in parentheses. These are descriptive shares of the "
            f"{churn.get('images') or 0:,} test images, not a test.", ""] + table(
        ["compared", "pairing", "images called differently", "image × finding calls that differ", "run pairs"],
        rows) + [_churn_sentence(churn), ""]


def _count(value: float | None, digits: int) -> str:
    return "n/a" if value is None else (f"{value:,.{digits}f}" if digits else f"{value:g}")


def _spread_cell(entry: dict, digits: int) -> str:
    """Median over the runs that reached the target, with the range when there are several."""
    if entry["n"] == 0:
        return "n/a"
    median = _count(entry["median"], digits)
    return median if entry["n"] < 2 else f"{median} ({_count(entry['min'], digits)}–{_count(entry['max'], digits)})"


def time_to_target_lines(result: dict) -> list[str]:
    """The target, how it was chosen, and each worker's epochs and seconds to reach it."""
    if result["target"] is None:
        return ["**Time to target.** No epoch recorded a validation macro AUROC, so no target could be set.", ""]
    bests = result["best_validation_macro_auroc"]
    lowest = result["lowest_worker"]
    rows = [[name, _count(bests.get(name), 3),
             f"{entry['reached']} of {entry['runs']}", _spread_cell(entry["epochs"], 0),
             _spread_cell(entry["seconds"], 1)]
            for name, entry in result["workers"].items()]
    return [f"**Time to target.** Target: validation macro AUROC {result['target']:.3f}, "
            f"{result['fraction']:.0%} of the lowest worker's best ({lowest}: {bests[lowest]:.3f}; a worker's best is "
            "the mean over its runs of each run's highest validation macro AUROC), one target for every worker. "
            "Epochs to the first epoch at or above it, and the training seconds up to and including that epoch "
            "(validation passes not counted); median over the runs that reached it, range in parentheses.", ""] + table(
        ["worker", "best validation AUROC", "runs reaching the target", "epochs", "seconds"], rows)


def beyond_auroc_lines(run_dir: Path) -> list[str]:
    """The section "Agreement and time to target" of a run directory's report ([] when metrics.json has
    neither: a run that has not been rescored since)."""
    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text()) if path.exists() else {}
    if "churn" not in metrics and "time_to_target" not in metrics:
        return []
    lines = ["## Agreement and time to target", ""]
    if "churn" in metrics:
        lines += churn_lines(metrics["churn"])
    if "time_to_target" in metrics:
        lines += time_to_target_lines(metrics["time_to_target"])
    return lines
