"""`harness parity`: probe every selected worker on the same inputs and print the parity tables
(counts, logits, losses, final feature maps and their CAMs, cross-loaded weights).

All workers run at once here (unlike `benchmark`, nothing is timed), so each can load every other
worker's trained weights. Exit status 0 when every tolerance holds, 1 otherwise.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from harness.config import BenchmarkConfig, cache_root
from harness.data.datasets import load_dataset
from harness.data.split_plan import plan_splits
from harness.models.architectures import architecture
from harness.models.weights.start import starting_weights
from harness.preflight import choose_device
from harness.progress import progress_bar
from harness.report.parity_tables import parity_lines
from harness.runtime.selection import runtime_for
from harness.training.parity import PARITY_STEPS, compare, cross_load, nudged, parity_inputs, probe
from harness.training.settings import configure_request


def run_parity(config: BenchmarkConfig, steps: int = PARITY_STEPS, logs: Path | None = None) -> dict:
    """Probe the workers of `config` (its batch size is the parity batch size); returns the summary."""
    workers = config.selected_workers()
    cache = cache_root()
    store = load_dataset(config.dataset, config.image_size, config.seed, cache, config.patients, config.skip_bad)
    split = plan_splits(store, config.split_fractions, config.seed).splits[0]
    inputs = parity_inputs(store.pixels, store.labels, split.train, config.seed, steps, config.batch_size)
    num_labels = len(store.label_names)
    start = starting_weights(config.init, config.architecture, num_labels, config.seed, cache)
    nudged_start = nudged(start.data, config.seed)
    logs = logs or cache / "parity-logs"
    logs.mkdir(parents=True, exist_ok=True)
    runtime = runtime_for(config.runtime_choice, cache)
    with ExitStack() as stack:
        stack.callback(runtime.close)
        choice = choose_device(config.device, runtime.name)
        runtime.use_device(choice.device)
        runtime.prepare(workers)
        clients = {}
        for spec in workers:
            clients[spec.label] = stack.enter_context(runtime.start(spec, logs / f"{spec.safe_label}.log")).client
            clients[spec.label].stall_timeout = config.stall_timeout  # the stream watchdog's floor
        probes = []
        for name, client in progress_bar(clients.items(), desc="parity probes", unit="worker", leave=False):
            # Always with deterministic algorithms, whatever a timed run would use.
            request = configure_request(replace(config.training(name), deterministic=True), num_labels)
            probes.append(probe(client, request, start.data, inputs, nudged_start))
        cross = [row for client in clients.values() for row in cross_load(client, probes, inputs)]
        devices = {name: client.metadata().device for name, client in clients.items()}
    summary = compare(probes, architecture(config.architecture, num_labels).counts(), cross)
    summary["starting_weights"] = {"sha256": start.sha256, "source": start.describe()}
    summary["architecture"] = config.architecture
    summary["device"] = {"chosen": choice.device, "reason": choice.reason, "workers": devices}
    return summary


def print_parity(summary: dict, json_path: Path | None) -> int:
    """Print the tables (and save the summary as JSON); the exit status the command returns."""
    print(f"{summary['architecture']}: starting weights {summary['starting_weights']['source']} "
          f"(sha256 {summary['starting_weights']['sha256'][:16]}...)")
    if "device" in summary:
        print(f"device ({summary['device']['reason']}): "
              + ", ".join(f"{name} {device}" for name, device in summary["device"]["workers"].items()))
    print("\n".join(parity_lines(summary)))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["passed"] else 1
