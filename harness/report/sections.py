"""The report's sections as Markdown lines, each built only from what a run saved.

run.json (config, data, provenance, workers), metrics.json (per worker: mean over runs, every
run), significance.json (intervals, and the comparison over paired runs) and epochs.csv.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from harness.report.framework_names import framework_name
from harness.report.verdicts import comparison_lines

MIB = 1024 * 1024
# A worker whose end-to-end training throughput reaches this share of the harness's ceiling was
# (nearly) waiting for the harness: its figure says more about the data path than the framework.
HARNESS_BOUND_SHARE = 0.8


def number(value, digits: int = 3) -> str:
    if value is None or value == "":
        return "n/a"
    return f"{float(value):.{digits}f}"


def integer(value) -> str:
    return "n/a" if value is None else f"{int(value):,}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def _with_std(result: dict, path: tuple[str, ...], bold: bool = False) -> str:
    """A test metric (mean over runs) with its std across runs when there are several."""
    value, std = result["test"], result.get("test_std")
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
        std = std.get(key) if isinstance(std, dict) else None
    text = number(value)
    text = f"**{text}**" if bold and value is not None else text
    return text if std is None or len(result.get("runs", [])) < 2 else f"{text} ± {number(std)}"


def _interval(entry: dict | None) -> str:
    if not entry or entry.get("low") is None:
        return "n/a"
    return f"{number(entry['low'])}–{number(entry['high'])}"


def _spread(entry: dict, digits: int = 1, scale: float = 1.0) -> str:
    """Median of repeated measurements with their range, e.g. "12.3 (11.9–13.0)"."""
    if entry.get("median") is None:
        return "n/a"
    median = number(entry["median"] / scale, digits)
    if entry["n"] < 2:
        return median
    return f"{median} ({number(entry['min'] / scale, digits)}–{number(entry['max'] / scale, digits)})"


def reported_versions(run: dict, name: str) -> dict[str, str]:
    """The framework versions worker `name` reported (run.json), {} when it reported none."""
    return run["workers"].get(name, {}).get("reported", {}).get("framework_versions", {})


def framework(run: dict, name: str) -> str:
    """What worker `name` ran, as prose ("Keras 3.15.1 on JAX 0.10.2"), then every package it reported
    but python and numpy, in brackets."""
    versions = reported_versions(run, name)
    packages = ", ".join(f"{k} {v}" for k, v in sorted(versions.items()) if k not in ("python", "numpy"))
    named = framework_name(versions)
    return f"{named} ({packages})" if packages and packages != named else named


def framework_names(run: dict, metrics: dict) -> dict[str, str]:
    """Each worker of `metrics` -> what it ran, as prose: the tables' "framework" column."""
    return {name: framework_name(reported_versions(run, name)) for name in metrics}


def _first_cells(name: str, frameworks: dict[str, str] | None) -> list[str]:
    return [name] if frameworks is None else [name, frameworks.get(name, "n/a")]


def _first_header(frameworks: dict[str, str] | None) -> list[str]:
    return ["worker"] if frameworks is None else ["worker", "framework"]


def accuracy_table(metrics: dict, significance: dict | None, frameworks: dict[str, str] | None = None) -> list[str]:
    """Table 1 of the reference studies, completed: ranking and thresholded metrics, one row per worker
    (with `frameworks`, what each ran beside its name)."""
    rows = []
    for name, result in metrics.items():
        interval = (significance or {}).get("workers", {}).get(name, {}).get("macro_auroc")
        tuned = "at_validation_thresholds" in result["test"]
        rows.append([
            *_first_cells(name, frameworks), _with_std(result, ("macro_auroc",), bold=True), _interval(interval),
            _with_std(result, ("micro_auroc",)), _with_std(result, ("macro_auprc",)),
            _with_std(result, ("precision",)), _with_std(result, ("recall",)), _with_std(result, ("f1",)),
            _with_std(result, ("at_validation_thresholds", "f1")) if tuned else "n/a",
        ])
    level = (significance or {}).get("level", 0.95)
    return table([*_first_header(frameworks), "macro AUROC", f"{level:.0%} CI (patients)", "micro AUROC", "macro AUPRC",
                  "precision @0.5", "recall @0.5", "F1 @0.5", "F1 @validation thresholds"], rows)


def frameworks_line(run: dict, metrics: dict) -> list[str]:
    """Which framework each worker ran, as the running worker reported it."""
    return ["Frameworks, as each worker reported them: "
            + "; ".join(f"{name}: {framework(run, name)}" for name in metrics) + ".", ""]


def _millions(value) -> str:
    return "n/a" if value is None else (f"{value / 1e6:.2f} M" if value >= 1e5 else f"{int(value):,}")


def _energy_cells(efficiency: dict) -> list[str]:
    """GPU energy per epoch of training and per image trained; "n/a" where the hardware did not tell
    (CPUs, GPUs without NVML's counter) and in results saved before energy was measured."""
    per_epoch, per_image = efficiency.get("joules_per_epoch"), efficiency.get("joules_per_image")
    return ["n/a" if not per_epoch else _spread(per_epoch, 1), "n/a" if not per_image else _spread(per_image, 3)]


def harness_bound(efficiency: dict, ceiling: dict | None) -> bool:
    """Whether a worker's median end-to-end train img/s is at least HARNESS_BOUND_SHARE of the ceiling."""
    limit = (ceiling or {}).get("images_per_second")
    median = efficiency.get("train_images_per_second", {}).get("median")
    return bool(limit and median is not None and median >= HARNESS_BOUND_SHARE * limit)


def ceiling_lines(ceiling: dict | None, bound: list[str]) -> list[str]:
    """The harness's ceiling under the efficiency table, and what the harness-bound flag means."""
    if not ceiling:
        return []
    rate = ceiling.get("images_per_second")
    lines = [f"Harness ceiling: {'n/a' if rate is None else f'{rate:,.0f}'} img/s, what the harness alone feeds at "
             f"this run's sizes ({ceiling['batches']} batches of {ceiling['batch_size']} at {ceiling['image_size']} "
             f"px, augmentation `{ceiling['augmentation']}`, {ceiling['threads']} batch-building thread(s), to "
             f"{ceiling['worker']}); measured before training."]
    if bound:
        lines.append(f"**harness-bound** ({', '.join(bound)}): end-to-end training throughput at least "
                     f"{HARNESS_BOUND_SHARE:.0%} of the ceiling, so the worker was (nearly) waiting for the harness "
                     "and its figure understates the framework; more `--data-threads` (or cores) raise the ceiling.")
    return lines + [""]


def efficiency_table(metrics: dict, ceiling: dict | None = None, frameworks: dict[str, str] | None = None) -> list[str]:
    """Table 2 of the reference studies, completed: time, throughput, memory, parameters, size, energy;
    each worker near the harness's `ceiling` (run.json's harness_ceiling) is flagged "harness-bound"
    (with `frameworks`, what each ran beside its name)."""
    rows, bound = [], []
    for name, result in metrics.items():
        efficiency, parameters, sizes = result["efficiency"], result["parameters"], result["model_size_bytes"]
        native = sizes.get("native")
        device, rss = efficiency.get("device_peak_bytes"), efficiency.get("peak_rss_bytes")
        train = _spread(efficiency["train_images_per_second"])
        if harness_bound(efficiency, ceiling):
            bound.append(name)
            train += " **harness-bound**"
        rows.append([
            *_first_cells(name, frameworks), _spread(efficiency["seconds_per_epoch"]), train,
            _spread(efficiency["compute_images_per_second"]), _spread(efficiency["first_step_seconds"], 2),
            _spread(efficiency["prediction_images_per_second"]),
            "n/a" if not rss else number(rss / MIB, 0), "n/a (CPU)" if device is None else number(device / MIB, 0),
            f"{_millions(parameters['trainable'])} / {_millions(parameters['non_trainable'])}",
            f"{number(sizes['neutral_safetensors'] / MIB, 1)} / "
            + (number(native["size_bytes"] / MIB, 1) if native else "n/a"),
            *_energy_cells(efficiency),
        ])
    formats = [f"{name}: {result['model_size_bytes']['native']['format']}" for name, result in metrics.items()
               if result["model_size_bytes"].get("native")]
    note = (["Model size: neutral safetensors / the framework's own format (" + "; ".join(formats) + ")."]
            if formats else [])
    if any(result["efficiency"].get("joules_per_epoch") for result in metrics.values()):
        note.append("Energy: the GPU's own counter (NVML) over each epoch's training, the whole device's; "
                    "n/a where the hardware does not tell (CPUs).")
    return (table([*_first_header(frameworks), "s/epoch", "train img/s (end to end)", "train img/s (compute)",
                   "warm-up s (first step)", "predict img/s", "peak RSS MiB", "device peak MiB",
                   "parameters trainable / non-trainable", "size MiB neutral / native", "J/epoch", "J/img"], rows)
            + note + ([""] if note else [])
            + ceiling_lines(ceiling, bound))


def _signed(value) -> str:
    return "n/a" if value is None else f"{float(value):+.3f}"


def training_noise_lines(comparison: dict) -> list[str]:
    """Each worker against itself: its runs' macro AUROC, their mean, sd and range."""
    workers = comparison.get("workers", {})
    if not workers:
        return []
    folds = (comparison.get("fold_correction") or {}).get("folds") or 1
    data = "the same data" + (f" ({folds}-fold cross-validation: run r of every worker has the same fold)"
                              if folds > 1 else "")
    if max(len(entry["runs"]) for entry in workers.values()) > 1:
        lines = [f"This spread is training noise: what a framework does against itself with {data} and different "
                 "training seeds (starting weights, batch order, augmentation), every run scored on the same test "
                 "images.", ""]
    else:
        lines = [f"One run per worker, so training noise, what a framework does against itself with {data} and "
                 "another training seed, was not measured; `--seeds 0,1,2` measures it.", ""]
    rows = []
    for name, entry in workers.items():
        count = len(entry["runs"])
        spread = number(entry.get("min")) if count < 2 else f"{number(entry.get('min'))}–{number(entry.get('max'))}"
        rows.append([name, str(count), number(entry.get("mean")), number(entry.get("sd")), spread])
    return lines + table(["worker", "runs", "mean macro AUROC", "sd over runs", "min–max"], rows)


def _label_verdict(row: dict) -> str:
    """The verdict word; a difference names the worker with the higher AUROC."""
    if row.get("verdict") == "different" and row.get("difference") is not None:
        return f"different ({row['a'] if row['difference'] > 0 else row['b']} higher)"
    return str(row.get("verdict") or "n/a")


def label_comparison_table(comparison: dict) -> list[str]:
    """Every pair x label: the mean difference over paired runs, its interval and the verdict; by label."""
    rows = comparison.get("labels", [])
    if not rows:
        return []
    order = {label: index for index, label in enumerate(dict.fromkeys(row["label"] for row in rows))}
    level = comparison.get("level", 0.95)
    def interval(row: dict) -> str:
        if row.get("low") is not None and row.get("high") is not None:
            return f"{_signed(row['low'])} to {_signed(row['high'])}"
        if row.get("runs", 0) < 2 and row.get("test_low") is not None and row.get("test_high") is not None:
            return f"{_signed(row['test_low'])} to {_signed(row['test_high'])} (test set only)"  # one run: no more
        return "n/a"

    body = [[row["label"], f"{row['a']} vs {row['b']}", _signed(row.get("difference")), interval(row),
             _label_verdict(row)] for row in sorted(rows, key=lambda row: order[row["label"]])]
    return table(["label", "pair", "mean difference (a − b)", f"{level:.0%} interval", "verdict"], body)


def differences_section(significance: dict, figure: tuple[str, str, str] | None = None,
                        sentences: Callable[[dict], list[str]] | None = None) -> list[str]:
    """The section on which differences are real: training noise (table, then `figure`, every run), each
    pair's verdict in words (`sentences`, by default comparison_lines), the per-label table, how it was
    computed. Words that claim a difference come only from `sentences` and from "different" verdicts."""
    comparison = significance.get("comparison")
    notes = [f"- {note}" for note in (comparison or {}).get("notes", []) + significance.get("notes", [])]
    computed = ["### How this was computed", ""] + notes + [""] if notes else []
    if not comparison:
        return ["significance.json has no comparison over paired runs (an older harness wrote it); "
                "`harness report RUN_DIR` recomputes it.", ""] + computed
    lines = ["### Training noise: each worker against itself", ""] + training_noise_lines(comparison)
    if figure:
        title, path, caption = figure
        lines += [f"![{title}]({path})", "", caption, ""]
    verdicts = (sentences or comparison_lines)(significance)
    if verdicts:
        lines += ["### Between workers: the mean difference over paired runs", ""]
        lines += [f"- {line}" for line in verdicts] + [""]
    per_label = label_comparison_table(comparison)
    if per_label:
        lines += ["### Per label", ""] + per_label
    return lines + computed


def per_label_table(metrics: dict, label_names: list[str], significance: dict | None) -> list[str]:
    names = list(metrics)
    first = metrics[names[0]]["test"]
    intervals = (significance or {}).get("workers", {})

    def cell(name: str, label: str) -> str:
        value = _with_std(metrics[name], ("auroc", label))
        entry = intervals.get(name, {}).get("auroc", {}).get(label)
        return value if not entry or entry.get("low") is None else f"{value} [{_interval(entry)}]"

    rows = [[label, str(first["positives"][label])] + [cell(n, label) for n in names] for label in label_names]
    rows.append(["**macro mean**", f"{first['samples']} images"]
                + [_with_std(metrics[n], ("macro_auroc",), bold=True) for n in names])
    return table(["label", "test positives"] + names, rows)


def _run_name(run: dict) -> str:
    return f"seed {run['seed']}" + (f", fold {run['fold']}" if run.get("fold") else "")


def schedule_lines(config: dict, metrics: dict) -> list[str]:
    """The settings, then for every worker and run: the epoch kept, early stopping, each rate change."""
    stop = (f"stop after {config['early_stop']} epochs without a new best" if config.get("early_stop")
            else "no early stopping")
    lines = [f"Decided by the harness from the validation loss it computes from each worker's logits, by the same "
             f"rules for every worker: ReduceLROnPlateau (factor {config['lr_factor']}, "
             f"patience {config['lr_patience']} "
             f"by torch's rule, minimum {config['min_lr']:g}); {stop}; the checkpoint with the lowest validation loss "
             "is restored (SetWeights) and is the one tested.", ""]
    rows = []
    for name, result in metrics.items():
        for run in result["runs"]:
            schedule = run["schedule"]
            changes = "; ".join(f"after epoch {c['epoch']}: {c['from']:g} → {c['to']:g}"
                                for c in schedule["lr_changes"]) or "none"
            rows.append([name, _run_name(run), str(schedule["epochs_trained"]),
                         f"{schedule['best_epoch']} ({number(schedule['best_validation_loss'], 4)})",
                         "yes" if schedule["stopped_early"] else "no", changes])
    return lines + table(["worker", "run", "epochs trained", "kept epoch (validation loss)", "stopped early",
                          "learning-rate changes"], rows)


def runs_table(metrics: dict) -> list[str]:
    """Every run's test metrics, so the spread behind each mean ± std is visible."""
    rows, spreads = [], []
    for name, result in metrics.items():
        if len(result["runs"]) < 2:
            continue
        for run in result["runs"]:
            test = run["test"]
            rows.append([name, str(run["seed"]), str(run.get("fold") or "-"), number(test["macro_auroc"]),
                         number(test["macro_auprc"]), number(test["f1"]), str(run["schedule"]["best_epoch"])])
        spread = result.get("spread", {}).get("macro_auroc", {})
        parts = [f"across folds {number(spread[k], 4)}" if k == "folds" else f"across seeds {number(spread[k], 4)}"
                 for k in ("folds", "seeds") if spread.get(k) is not None]
        if parts:
            spreads.append(f"- {name}: standard deviation of the macro AUROC " + ", ".join(parts) + ".")
    if not rows:
        return []
    return (table(["worker", "seed", "fold", "macro AUROC", "macro AUPRC", "F1 @0.5", "kept epoch"], rows)
            + spreads + [""])


def epochs_table(rows: list[dict]) -> list[str]:
    body = [[r["worker"], r.get("seed", ""), r.get("fold") or "-", r["epoch"], number(r["learning_rate"], 6),
             number(r["train_loss"], 4), number(r["validation_loss"], 4), number(r["validation_macro_auroc"]),
             "✓" if r.get("checkpoint") == "1" else "", number(r["seconds"], 1),
             number(r["train_images_per_second"], 1)]
            for r in rows]
    return table(["worker", "seed", "fold", "epoch", "learning rate", "train loss", "validation loss",
                  "validation AUROC", "new best", "seconds", "img/s"], body)


def _ran_in(worker: dict) -> str:
    """Where a worker ran: its environment's lock hash, its image, or its address."""
    if worker.get("runtime") == "docker":
        return f"image `{worker['image']}` (`{(worker.get('image_id') or 'unknown id')[:19]}`)"
    if worker.get("runtime") == "remote":
        return f"remote worker at `{worker['address']}`" + (" over TLS with a token" if worker.get("tls") else "")
    environment = worker["environment"]
    if environment.get("existing"):  # --python: no lock, the interpreter as the user has it
        return (f"existing interpreter `{environment['python']}` (Python {environment.get('python_version')}, "
                f"installed packages sha256 `{environment['lock_sha256'][:16]}`)")
    return f"environment lock `{environment['lock_sha256'][:16]}`"


def provenance_lines(run: dict, metrics: dict) -> list[str]:
    prov = run["provenance"]
    git, host, config = prov["git"], prov["host"], run["config"]
    memory = f", {host['memory_bytes'] / 1024**3:.0f} GiB" if host.get("memory_bytes") else ""
    lines = [
        f"- Commit `{git['commit'] or 'unknown'}`" + (" (with uncommitted changes)" if git.get("dirty") else "") + ".",
        f"- Host: {host['cpu']}, {host['cpu_count']} cores{memory}, {host['platform']}, Python {host['python']}.",
        f"- Data seed {config['seed']} (data, test set, folds); "
        f"training seeds {', '.join(map(str, config.get('seeds') or [config['seed']]))} "
        f"(starting weights, batch order, augmentation). Data digest `{run['data']['content_sha256']}`.",
        "- Harness packages: " + ", ".join(f"{k} {v}" for k, v in prov["harness_packages"].items()) + ".",
    ]
    for name, worker in run["workers"].items():
        reported = worker.get("reported", {})
        versions = ", ".join(f"{k} {v}" for k, v in sorted(reported.get("framework_versions", {}).items()))
        numerics = metrics.get(name, {}).get("numerics", {})
        lines.append(
            f"- `{name}` reported: {versions}; device {reported.get('device')}; threads {reported.get('threads')}; "
            f"numerics {json.dumps(numerics, sort_keys=True)}; {_ran_in(worker)}."
        )
    digests = {tuple(result.get("batch_order_sha256", [])) for result in metrics.values()}
    if len(metrics) > 1 and len(digests) == 1:
        runs = max(len(result["runs"]) for result in metrics.values())
        lines.append("- Every worker received byte-identical training batches (augmented pixels and labels) in the "
                     "same order: its echoed batch digests are equal, epoch by epoch"
                     + (", run by run" if runs > 1 else "") + ".")
    return lines + [""]
