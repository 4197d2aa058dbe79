"""`harness benchmark`: one study, every selected worker on the same data.

The harness checks the workers (preflight), probes parity worker by worker, then executes the study's
runs (worker x training seed x fold; harness.study), each in a worker process of its own: one after
another here, so none competes with another for the cores or the GPU and every timing is the
worker's alone, or spread over a Ray cluster (`--runtime ray`, harness.cluster), where each run
records its neighbours. A finished run is committed at once; `--resume` finishes an interrupted study.
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
from harness.report.localization import summarise_run
from harness.report.significance import compare_run
from harness.runtime.base import Runtime
from harness.runtime.registry import WorkerSpec
from harness.runtime.selection import runtime_for
from harness.study import ledger, resume
from harness.study.executor import Executor, StudyFailed
from harness.study.neighbours import neighbours
from harness.study.runs import PlannedRun, StudyInputs, driver_thread_environment, first_batch_digests, plan_runs
from harness.study.sequential import SequentialExecutor
from harness.tracking import log_run
from harness.training.ceiling import measure_ceiling
from harness.training.localize import save_box_data
from harness.training.parity import ParityInputs, Probe, compare, cross_load, nudged, parity_inputs, probe
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
    """Run the benchmark described by `config` (or, with `config.resume`, finish the study in that run
    directory); returns the run directory.

    On failure or interruption the exception propagates, after run.json has recorded it and the
    report has been written from whatever had completed.
    """
    resumed = resume.check_directory(config.resume) if config.resume is not None else None
    if resumed is not None:
        config = config.resumed_from(resumed.read_run()["config"])
    workers = config.selected_workers()
    cache = cache_root()
    runtime = runtime_for(config.runtime_choice, cache)
    store = load_dataset(config.dataset, config.image_size, config.seed, cache, config.patients, config.skip_bad)
    plan = plan_splits(store, config.split_fractions, config.seed, config.folds)
    localize = config.localizes(len(store.boxes))  # `--localize on` without boxes is refused here, before any work
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
        if resumed is not None:  # the same data, code and environments as the runs already finished
            resume.check_unchanged(resumed.read_run(), store, plan, runtime, workers, resumed)
        announce(f"device: {checked['device']} ({checked['device_reason']})")
        for problem in checked["unequal"]:  # --allow-unequal: said now, and at the top of the report
            print(f"warning: unequal conditions: {problem}", file=sys.stderr)
        executor = _executor(config, runtime, checked)
        try:
            executor.prepare(workers, store)  # for Ray: every node checked, before a run directory exists
            return _run(config, workers, runtime, executor, store, plan, cache, checked, preflight_logs, resumed,
                        localize)
        finally:
            executor.close()
    finally:
        runtime.close()


def _open_run(config: BenchmarkConfig, store: PixelStore, plan: SplitPlan, labels: np.ndarray, checked: dict,
              resumed: RunDirectory | None) -> tuple[RunDirectory, dict]:
    """The run directory and its record: new, or the resumed one with this resumption noted."""
    if resumed is not None:
        record = resumed.read_run()
        record["resumptions"] = [*record.get("resumptions", []), {
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "previous_status": record.get("status"),
            "previous_error": record.get("error"), "provenance": provenance.collect(), "preflight": checked,
            "runtime": config.runtime}]
        record.update(status="running", error=None)
        resumed.write_run(record)
        return resumed, record
    return _new_run(config, store, plan, labels, checked)


def _new_run(config: BenchmarkConfig, store: PixelStore, plan: SplitPlan, labels: np.ndarray,
             checked: dict) -> tuple[RunDirectory, dict]:
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
        "runs": {},
    }
    run.write_run(record)
    _save_split(run, store, labels, plan)
    return run, record


def _probe_parity(config: BenchmarkConfig, workers: list[WorkerSpec], runtime: Runtime, run: RunDirectory,
                  record: dict, start: bytes, inputs: ParityInputs, num_labels: int) -> None:
    """Every worker in turn, each in a worker process of its own: the parity probe (same start, same
    batches; then earlier workers' trained weights are loaded), and what it reports about itself."""
    nudged_start = nudged(start, config.seed)
    probes: list[Probe] = []
    cross: list[dict] = []
    for spec in workers:
        name = spec.label
        with runtime.start(spec, run.worker_log(name)) as worker:
            client = worker.client
            client.stall_timeout = config.stall_timeout  # the stream watchdog's floor
            settings = config.training(name)
            # Parity is always probed with deterministic algorithms: run-to-run kernel noise would
            # blur the comparison; the timed runs use what --deterministic says.
            probed = probe(client, configure_request(replace(settings, deterministic=True), num_labels), start,
                           inputs, nudged_start)
            cross += cross_load(client, probes, inputs)
            probes.append(probed)
            run.write_parity(compare(probes, architecture(config.architecture, num_labels).counts(), cross))
            client.configure(configure_request(settings, num_labels, config.training_seeds[0]))
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


def _executor(config: BenchmarkConfig, runtime: Runtime, checked: dict) -> Executor:
    """Where the study's runs execute: one after another here, or spread over a Ray cluster."""
    if config.runtime == "ray":
        try:
            from harness.cluster.ray_executor import RayExecutor
        except ImportError as error:
            raise ValueError(f"--runtime ray needs Ray, the extra cxrbench[cluster] (pip install -e '.[cluster]'): "
                             f"{error}") from None
        return RayExecutor(config.cluster_settings(checked["device"]))
    return SequentialExecutor(runtime)


def _run(config: BenchmarkConfig, workers: list[WorkerSpec], runtime: Runtime, executor: Executor, store: PixelStore,
         plan: SplitPlan, cache: Path, checked: dict, preflight_logs: Path, resumed: RunDirectory | None,
         localize: bool = False) -> Path:
    """The study itself, once every worker is ready to start: see run_benchmark."""
    labels = store.labels
    if config.shuffle_labels:
        split = plan.splits[0]
        labels = shuffled_labels(labels, np.concatenate([split.train, split.validation]), config.seed)
    run, record = _open_run(config, store, plan, labels, checked, resumed)
    if localize and resumed is None:
        save_box_data(run, store, plan.splits[0].test)
    for log in sorted(preflight_logs.glob("*.log")):  # kept with the run: workers/<name>.preflight.log
        run.worker_log(f"{log.stem}.preflight").parent.mkdir(parents=True, exist_ok=True)
        shutil.move(log, run.worker_log(f"{log.stem}.preflight"))
    shutil.rmtree(preflight_logs, ignore_errors=True)

    num_labels = len(store.label_names)
    seeds = config.training_seeds
    starts = {seed: starting_weights(config.init, config.architecture, num_labels, seed, cache) for seed in seeds}
    start = starts[seeds[0]]
    record["starting_weights"] = {"sha256": start.sha256, "bytes": len(start.data), **start.source,
                                  "description": start.describe()}
    if len(seeds) > 1:
        record["starting_weights"]["per_seed"] = {str(seed): starts[seed].sha256 for seed in seeds}
    planned = plan_runs(workers, seeds, plan.splits)
    results: dict[str, dict] = {}
    try:
        if "harness_ceiling" not in record:
            # What the harness alone can feed, at this run's sizes: a worker near it is waiting for the harness.
            record["harness_ceiling"] = measure_ceiling(runtime, config.training(), store.pixels, labels,
                                                        plan.splits[0].train, run.worker_log("null-ceiling"), cache)
            run.write_run(record)
        if record.get("parity_status") != "completed":
            _probe_parity(config, workers, runtime, run, record, start.data,
                          parity_inputs(store.pixels, labels, plan.splits[0].train, config.seed), num_labels)
            record["parity_status"] = "completed"
            run.write_run(record)
        done = ledger.finished(run, planned)
        abandoned = ledger.discard_unfinished(run)
        pending = [planned_run for planned_run in planned if planned_run.key not in done]
        if resumed is not None:
            record["resumptions"][-1].update(finished_before=sorted(done), redone=[r.key for r in pending],
                                             abandoned=abandoned)
            announce(f"resuming: {len(done)} of {len(planned)} runs finished, {len(pending)} to run"
                     + (f" (set aside, unfinished: {', '.join(abandoned)})" if abandoned else ""))
        results = _combined(planned, done)
        inputs = _study_inputs(config, workers, store, plan, labels, {seed: w.data for seed, w in starts.items()},
                               localize)

        def finished_run(planned_run: PlannedRun, staging: Path, outcome: dict) -> None:
            ledger.commit(run, planned_run, staging, outcome, planned)
            done[planned_run.key] = outcome
            record["runs"][planned_run.key] = {"status": "finished", "execution": outcome["execution"],
                                               "attempts": outcome["attempts"]}
            run.write_run(record)
            results.clear()
            results.update(_combined(planned, done))
            run.write_metrics({"workers": results})

        def started_run(planned_run: PlannedRun, where: dict) -> None:
            record["runs"][planned_run.key] = {"status": "running", **where}
            run.write_run(record)

        record["study"] = {"executor": executor.name, "runs": len(planned), **executor.facts}
        run.write_run(record)
        executor.execute(pending, inputs, run, started_run, finished_run)
        record["study"]["neighbours"] = neighbours({key: entry["execution"] for key, entry in done.items()})
        check_same_batches({spec.label: [done[r.key]["result"] for r in planned if r.worker == spec.label]
                            for spec in workers})
        if results:  # every worker has run: churn between them and time to one target, beside their results
            run.write_metrics({"workers": results, **beyond_auroc(run.path, results)})
        if config.bootstrap and results:
            run.write_significance(compare_run(run.path, config.bootstrap, config.seed))
        if localize and results:
            summarise_run(run.path, config.bootstrap, config.seed, config.cam_threshold, config.cam_components)
        record["status"] = "completed"
    except BaseException as error:
        if isinstance(error, StudyFailed):  # the runs that did not finish, with their attempts
            for key, tries in error.runs.items():
                record["runs"][key] = {"status": tries[-1]["outcome"], "attempts": tries}
        record["status"] = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        record["error"] = str(error) or type(error).__name__
        print(f"results written so far are kept in {run.path}; finish the study with "
              f"`harness benchmark --resume {run.path}`", file=sys.stderr)
        raise
    finally:
        if "study" in record:
            record["study"].update(executor.facts)
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
        if config.register is not None and record["status"] == "completed":
            from harness.model_registry.command import register_run
            from harness.model_registry.store import registry_uri

            uri = registry_uri(config.register, config.out)
            for name, version in register_run(run.path, uri):
                print(f"registered {name} version {version} in {uri}")
    return run.path


def _study_inputs(config: BenchmarkConfig, workers: list[WorkerSpec], store: PixelStore, plan: SplitPlan,
                  labels: np.ndarray, starts: dict[int, bytes], localize: bool = False) -> StudyInputs:
    """What every run of the study shares, with the first batch digests of each (seed, fold) built here."""
    return StudyInputs(
        store_path=store.path, store_sha256=store.content_sha256, splits=plan.splits, fit_labels=labels,
        starts=starts, settings={spec.label: replace(config.training(spec.label), localize=localize)
                                 for spec in workers},
        num_labels=len(store.label_names), stall_timeout=config.stall_timeout,
        first_digests={(seed, index): first_batch_digests(store, split, labels, config.training(), seed)
                       for seed in config.training_seeds for index, split in enumerate(plan.splits)},
        thread_environment=driver_thread_environment())


def _combined(planned: list[PlannedRun], done: dict[str, dict]) -> dict[str, dict]:
    """Each worker's finished runs combined, in the study's order (whatever order they finished in)."""
    by_worker: dict[str, list[dict]] = {}
    for planned_run in planned:
        if planned_run.key in done:
            by_worker.setdefault(planned_run.worker, []).append(done[planned_run.key]["result"])
    return {worker: combine_runs(runs) for worker, runs in by_worker.items()}
