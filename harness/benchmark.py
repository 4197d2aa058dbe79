"""`harness benchmark`: one run, every selected worker on the same data, one after the other.

Workers run one at a time, never side by side, so none competes with another for the cores or the
GPU and every timing is the worker's alone.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from harness.config import BenchmarkConfig, cache_root
from harness.data.datasets import load_dataset
from harness.data.pixel_store import PixelStore
from harness.data.split_plan import SplitPlan, plan_splits
from harness.data.splits import Split
from harness.evaluation.run_summary import combine_runs
from harness.models.architectures import architecture
from harness.models.weights.start import starting_weights
from harness.preflight import preflight
from harness.progress import announce
from harness.records import provenance
from harness.records.run_directory import RunDirectory
from harness.report.assembly import write_report
from harness.report.beyond_auroc import beyond_auroc
from harness.report.significance import compare_run
from harness.runtime.base import Runtime
from harness.runtime.registry import WorkerSpec
from harness.runtime.selection import runtime_for
from harness.tracking import log_run
from harness.training.ceiling import measure_ceiling
from harness.training.loop import TrainingData, TrainingRun, train_and_evaluate
from harness.training.parity import Probe, compare, cross_load, nudged, parity_inputs, probe
from harness.training.settings import configure_request


def shuffled_labels(labels: np.ndarray, indices: np.ndarray, seed: int) -> np.ndarray:
    """Control: permute label rows among `indices` (training and validation), test labels untouched.

    Each image keeps a plausible label set, but no longer its own, so nothing can be learned and the
    test AUROC must come out near 0.5.
    """
    permuted = labels.copy()
    rng = np.random.default_rng([seed, 0xC0111301])
    permuted[indices] = labels[indices][rng.permutation(len(indices))]
    return permuted


def _split_facts(store: PixelStore, split: Split) -> dict:
    facts = {}
    for part, indices in split.parts().items():
        facts[part] = {
            "images": int(len(indices)),
            "patients": int(len(np.unique(store.patient_ids[indices]))),
            "positives": dict(zip(store.label_names, map(int, store.labels[indices].sum(axis=0)), strict=True)),
        }
    return facts


def _data_facts(store: PixelStore, plan: SplitPlan, config: BenchmarkConfig) -> dict:
    facts = {
        "store": str(store.path),
        "content_sha256": store.content_sha256,
        "images": len(store),
        "patients": int(len(np.unique(store.patient_ids))),
        "image_size": store.image_size,
        "label_names": list(store.label_names),
        "notes": store.notes,
        "split": _split_facts(store, plan.splits[0]),
        "test_source": plan.test_source,
        "validation_source": plan.validation_source,
        "augmentation": config.augmentation.describe(),
    }
    if plan.cross_validated:
        facts["folds"] = [_split_facts(store, split) for split in plan.splits]
        facts["fold_balance"] = plan.balance
    return facts


def training_runs(seeds: tuple[int, ...], plan: SplitPlan) -> list[tuple[TrainingRun, Split]]:
    """Every (training seed, fold) run of a worker, seeds outermost, with its split."""
    runs = []
    for seed in seeds:
        for number, split in enumerate(plan.splits, start=1):
            fold = number if plan.cross_validated else None
            folder = "/".join(([f"seed{seed}"] if len(seeds) > 1 else []) + ([f"fold{fold}"] if fold else []))
            runs.append((TrainingRun(seed, fold, folder), split))
    return runs


def check_same_batches(results: dict[str, list[dict]]) -> None:
    """RuntimeError unless every worker echoed the same batch digests, epoch by epoch, run by run.

    The harness built each worker's batches anew (augmentation included); equal digests prove the
    workers trained on the same bytes.
    """
    names = list(results)
    reference = [result["batch_order_sha256"] for result in results[names[0]]]
    for name in names[1:]:
        digests = [result["batch_order_sha256"] for result in results[name]]
        for number, (theirs, ours) in enumerate(zip(digests, reference, strict=True), start=1):
            # strict=False: workers may stop early at different epochs; the epochs both trained must agree.
            for epoch, (a, b) in enumerate(zip(theirs, ours, strict=False), start=1):
                if a != b:
                    raise RuntimeError(f"{name} received other batches than {names[0]} in run {number}, epoch {epoch} "
                                       f"(order digest {a[:12]} vs {b[:12]}): the comparison is void")


def _save_split(run: RunDirectory, store: PixelStore, labels: np.ndarray, plan: SplitPlan) -> None:
    """Indices, labels, sample and patient ids of every part (of every fold), for rescoring and audits."""
    for number, split in enumerate(plan.splits, start=1):
        folder = f"labels/fold{number}" if plan.cross_validated else "labels"
        for part, indices in split.parts().items():
            run.save_array(f"{folder}/{part}_indices.npy", indices)
        run.save_array(f"{folder}/validation.npy", labels[split.validation])
    run.save_array("labels/test.npy", store.labels[plan.splits[0].test])  # the same test set in every fold
    run.write_samples({part: {"sample_ids": [store.sample_ids[i] for i in indices],
                              "patient_ids": store.patient_ids[indices].tolist()}
                       for part, indices in plan.splits[0].parts().items()})


def run_benchmark(config: BenchmarkConfig) -> Path:
    """Run the benchmark described by `config`; returns the run directory.

    On failure or interruption the exception propagates, after run.json has recorded it and the
    report has been written from whatever had completed.
    """
    workers = config.selected_workers()
    cache = cache_root()
    runtime = runtime_for(config.runtime_choice, cache)
    store = load_dataset(config.dataset, config.image_size, config.seed, cache, config.patients, config.skip_bad)
    plan = plan_splits(store, config.split_fractions, config.seed, config.folds)
    smallest = min(len(split.train) for split in plan.splits)
    if smallest < config.batch_size:
        raise ValueError(f"--batch-size: {config.batch_size} is more than the {smallest} training images")
    preflight_logs = Path(tempfile.mkdtemp(prefix="cxrbench-preflight-"))
    try:
        # Environments or images, engine, addresses, then every worker started and checked for equal
        # conditions: all before a run directory exists.
        try:
            checked = preflight(runtime, workers, config.training, len(store.label_names), preflight_logs,
                                config.device, config.precision, config.allow_unequal)
        except BaseException:
            print(f"the workers' logs of the preflight are kept in {preflight_logs}", file=sys.stderr)
            raise
        announce(f"device: {checked['device']} ({checked['device_reason']})")
        for problem in checked["unequal"]:  # --allow-unequal: said now, and at the top of the report
            print(f"warning: unequal conditions: {problem}", file=sys.stderr)
        return _run(config, workers, runtime, store, plan, cache, checked, preflight_logs)
    finally:
        runtime.close()


def _run(config: BenchmarkConfig, workers: list[WorkerSpec], runtime: Runtime, store: PixelStore, plan: SplitPlan,
         cache: Path, checked: dict, preflight_logs: Path) -> Path:
    """The run itself, once every worker is ready to start: see run_benchmark."""
    labels = store.labels
    if config.shuffle_labels:
        split = plan.splits[0]
        labels = shuffled_labels(labels, np.concatenate([split.train, split.validation]), config.seed)

    suffix = (("-shuffled-labels" if config.shuffle_labels else "")
              + (f"-{config.folds}folds" if plan.cross_validated else "")
              + (f"-{len(config.training_seeds)}seeds" if len(config.training_seeds) > 1 else ""))
    run = RunDirectory.create(config.out, f"{config.dataset_kind}-{config.architecture}-seed{config.seed}{suffix}")
    record: dict[str, Any] = {
        "status": "running",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": config.to_dict(),
        "provenance": provenance.collect(),
        "data": _data_facts(store, plan, config),
        "preflight": checked,
        "workers": {},
    }
    run.write_run(record)
    for log in sorted(preflight_logs.glob("*.log")):  # kept with the run: workers/<name>.preflight.log
        run.worker_log(f"{log.stem}.preflight").parent.mkdir(parents=True, exist_ok=True)
        shutil.move(log, run.worker_log(f"{log.stem}.preflight"))
    shutil.rmtree(preflight_logs, ignore_errors=True)
    _save_split(run, store, labels, plan)

    num_labels = len(store.label_names)
    seeds = config.training_seeds
    starts = {seed: starting_weights(config.init, config.architecture, num_labels, seed, cache) for seed in seeds}
    start = starts[seeds[0]]
    record["starting_weights"] = {"sha256": start.sha256, "bytes": len(start.data), **start.source,
                                  "description": start.describe()}
    if len(seeds) > 1:
        record["starting_weights"]["per_seed"] = {str(seed): starts[seed].sha256 for seed in seeds}
    inputs = parity_inputs(store.pixels, labels, plan.splits[0].train, config.seed)
    nudged_start = nudged(start.data, config.seed)
    probes: list[Probe] = []
    cross: list[dict] = []
    results: dict[str, dict] = {}
    run_results: dict[str, list[dict]] = {}
    try:
        # What the harness alone can feed, at this run's sizes: a worker near it is waiting for the harness.
        record["harness_ceiling"] = measure_ceiling(runtime, config.training(), store.pixels, labels,
                                                    plan.splits[0].train, run.worker_log("null-ceiling"), cache)
        run.write_run(record)
        for spec in workers:
            name = spec.label
            with runtime.start(spec, run.worker_log(name)) as worker:
                client = worker.client
                client.stall_timeout = config.stall_timeout  # the stream watchdog's floor
                settings = config.training(name)  # the same for every worker but for its --option switches
                # Parity is always probed with deterministic algorithms: run-to-run kernel noise would
                # blur the comparison; the timed runs use what --deterministic says.
                parity_request = configure_request(replace(settings, deterministic=True), num_labels)
                # Parity first (same start, same batches; then earlier workers' trained weights are
                # loaded here), then a fresh model and optimizer from the same start for the timed run.
                probed = probe(client, parity_request, start.data, inputs, nudged_start)
                cross += cross_load(client, probes, inputs)
                probes.append(probed)
                parity = compare(probes, architecture(config.architecture, num_labels).counts(), cross)
                run.write_parity(parity)
                configured = client.configure(configure_request(settings, num_labels, seeds[0]))
                metadata = client.metadata()  # after Configure: threads and numerics as they are used
                spec.check_reported(dict(metadata.framework_versions))
                record["workers"][name] = {
                    "worker": spec.name,
                    "framework_version": spec.framework_version,
                    **worker.provenance,
                    "reported": {
                        "framework_versions": dict(metadata.framework_versions),
                        "device": metadata.device,
                        "threads": metadata.threads,
                        "numerics": dict(metadata.numerics),
                        "contract_version": metadata.contract_version,
                        "pid": metadata.pid,
                    },
                }
                run.write_run(record)
                run_results[name] = []
                for number, (training_run, split) in enumerate(training_runs(seeds, plan)):
                    if number:  # a fresh model and optimizer for every run
                        configured = client.configure(configure_request(settings, num_labels, training_run.seed))
                    client.set_weights(starts[training_run.seed].data)
                    data = TrainingData(store=store, split=split, fit_labels=labels)
                    run_results[name].append(train_and_evaluate(client, settings, data, run, configured, training_run,
                                                                measure_native=number == 0))
                    results[name] = combine_runs(run_results[name])
                    run.write_metrics({"workers": results})
            check_same_batches(run_results)
        if results:  # every worker has run: churn between them and time to one target, beside their results
            run.write_metrics({"workers": results, **beyond_auroc(run.path, results)})
        if config.bootstrap and results:
            run.write_significance(compare_run(run.path, config.bootstrap, config.seed))
        record["status"] = "completed"
    except BaseException as error:
        record["status"] = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        record["error"] = str(error) or type(error).__name__
        print(f"results written so far are kept in {run.path}", file=sys.stderr)
        raise
    finally:
        record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        run.write_run(record)
        if results:
            try:
                write_report(run.path)
            except Exception as error:  # never hide the run's own error behind the report's
                print(f"could not write the report: {error}", file=sys.stderr)
        if config.mlflow is not None and results:
            try:
                log_run(run.path, config.mlflow, config.out)
            except Exception as error:
                print(f"could not log the run to MLflow: {error}", file=sys.stderr)
                if record["status"] == "completed":  # asked for and failed: say so in the exit status too
                    raise RuntimeError(f"--mlflow: could not log the run ({error}); "
                                       f"its results are in {run.path}") from error
    return run.path
