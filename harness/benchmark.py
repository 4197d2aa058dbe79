"""`harness benchmark`: one run, every selected worker on the same data, one after the other.

Workers run one at a time, never side by side, so none competes with another for the cores or the
GPU and every timing is the worker's alone.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from harness import provenance
from harness.architectures import architecture
from harness.config import BenchmarkConfig
from harness.datasets import load_dataset
from harness.parity import Probe, compare, cross_load, nudged, parity_inputs, probe
from harness.registry import pinned_version, resolve_workers
from harness.report import write_report
from harness.results import RunDirectory
from harness.runtime.environments import cache_root, ensure_environment
from harness.runtime.local import LocalWorker
from harness.splits import patient_wise_split
from harness.training import TrainingData, configure_request, train_and_evaluate
from harness.weights.start import starting_weights


def shuffled_labels(labels: np.ndarray, indices: np.ndarray, seed: int) -> np.ndarray:
    """Control: permute label rows among `indices` (training and validation), test labels untouched.

    Each image keeps a plausible label set, but no longer its own, so nothing can be learned and the
    test AUROC must come out near 0.5.
    """
    permuted = labels.copy()
    rng = np.random.default_rng([seed, 0xC0111301])
    permuted[indices] = labels[indices][rng.permutation(len(indices))]
    return permuted


def _data_facts(data: TrainingData) -> dict:
    store, split = data.store, data.split
    facts = {
        "store": str(store.path),
        "content_sha256": store.content_sha256,
        "images": len(store),
        "patients": int(len(np.unique(store.patient_ids))),
        "image_size": store.image_size,
        "label_names": list(store.label_names),
        "notes": store.notes,
        "split": {},
    }
    for part, indices in split.parts().items():
        facts["split"][part] = {
            "images": int(len(indices)),
            "patients": int(len(np.unique(store.patient_ids[indices]))),
            "positives": dict(zip(store.label_names, map(int, store.labels[indices].sum(axis=0)))),
        }
    return facts


def run_benchmark(config: BenchmarkConfig) -> Path:
    """Run the benchmark described by `config`; returns the run directory.

    On failure or interruption the exception propagates, after run.json has recorded it and the
    report has been written from whatever had completed.
    """
    workers = resolve_workers(config.workers)
    config.check_option_targets([folder.name for folder in workers])
    cache = cache_root()
    store = load_dataset(config.dataset, config.image_size, config.seed, cache, config.patients)
    split = patient_wise_split(store.patient_ids, config.split_fractions, config.seed)
    if len(split.train) < config.batch_size:
        raise ValueError(f"--batch-size: {config.batch_size} is more than the {len(split.train)} training images")
    labels = store.labels
    if config.shuffle_labels:
        labels = shuffled_labels(labels, np.concatenate([split.train, split.validation]), config.seed)
    data = TrainingData(store=store, split=split, fit_labels=labels)

    suffix = "-shuffled-labels" if config.shuffle_labels else ""
    run = RunDirectory.create(config.out, f"{config.dataset}-{config.architecture}-seed{config.seed}{suffix}")
    record = {
        "status": "running",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": config.to_dict(),
        "provenance": provenance.collect(),
        "data": _data_facts(data),
        "workers": {},
    }
    run.write_run(record)
    for part, indices in split.parts().items():
        run.save_array(f"labels/{part}_indices.npy", indices)
    run.save_array("labels/test.npy", store.labels[split.test])
    run.save_array("labels/validation.npy", labels[split.validation])
    run.write_samples({part: {"sample_ids": [store.sample_ids[i] for i in indices],
                              "patient_ids": store.patient_ids[indices].tolist()}
                       for part, indices in split.parts().items()})

    num_labels = len(store.label_names)
    start = starting_weights(config.init, config.architecture, num_labels, config.seed, cache)
    record["starting_weights"] = {"sha256": start.sha256, "bytes": len(start.data), **start.source,
                                  "description": start.describe()}
    inputs = parity_inputs(store.pixels, labels, split.train, config.seed)
    nudged_start = nudged(start.data, config.seed)
    probes: list[Probe] = []
    cross: list[dict] = []
    results: dict[str, dict] = {}
    try:
        for folder in workers:
            environment = ensure_environment(folder, cache)
            with LocalWorker(folder, environment, run.worker_log(folder.name)) as worker:
                client = worker.start()
                request = configure_request(config, num_labels, folder.name)
                # Parity first (same start, same batches; then earlier workers' trained weights are
                # loaded here), then a fresh model and optimizer from the same start for the timed run.
                probed = probe(client, request, start.data, inputs, nudged_start)
                cross += cross_load(client, probes, inputs)
                probes.append(probed)
                parity = compare(probes, architecture(config.architecture, num_labels).counts(), cross)
                run.write_parity(parity)
                configured = client.configure(request)
                client.set_weights(start.data)
                metadata = client.metadata()  # after Configure: threads and numerics as they are used
                record["workers"][folder.name] = {
                    "pinned_version": pinned_version(folder),
                    "environment": {"key": environment.key, "lock_sha256": environment.lock_sha256},
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
                results[folder.name] = train_and_evaluate(client, config, data, run, configured)
                run.write_metrics({"workers": results})
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
    return run.path
