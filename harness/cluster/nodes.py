"""What every node must share with the driver before a study trains on it, and the check that refuses a node.

A node trains on its own copy of the pixel store (the same path, or the same place in its own
cache), with its own checkout of the project and its own worker environments: each is compared with
the driver's by content, so a corrupted byte of pixels, another commit or a changed pin on one node
refuses the study before any run starts, naming the node and what differs.
Plain Python: the Ray task that runs `node_facts` on each node lives in ray_executor.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cxrbench_worker.host import cpu_model, cuda_device_names
from harness.config import cache_root
from harness.data.pixel_store import content_digest, open_store
from harness.records.provenance import git_state
from harness.runtime.local import LocalRuntime
from harness.runtime.registry import WorkerSpec


@dataclass(frozen=True)
class StoreLocation:
    """Where a node finds the pixel store: under its own cache (`relative`) or at an absolute path."""

    relative: str | None
    absolute: str | None

    @classmethod
    def of(cls, path: Path, cache: Path) -> StoreLocation:
        try:
            return cls(str(path.resolve().relative_to(cache.resolve())), None)
        except ValueError:
            return cls(None, str(path))

    def resolve(self) -> Path:
        """The store's folder on this node."""
        return cache_root() / self.relative if self.relative is not None else Path(str(self.absolute))

    def describe(self) -> str:
        return f"$CXRBENCH_CACHE/{self.relative}" if self.relative is not None else str(self.absolute)


def node_facts(store: StoreLocation, workers: list[WorkerSpec], device: str, interpreters: dict[str, Path]) -> dict:
    """This node's side of the comparison: its code, its pixel store's digest recomputed from its bytes,
    each worker environment's lock (as this node's checkout has it; nothing is built), its GPU models
    and CPUs."""
    facts: dict = {"host": socket.gethostname(), "git": git_state(), "cpus": os.cpu_count(), "cpu": cpu_model(),
                   "gpu_models": cuda_device_names()}
    folder = store.resolve()
    try:
        facts["store_sha256"] = content_digest(open_store(folder))
    except (OSError, ValueError, KeyError) as error:
        facts["store_sha256"] = None
        facts["store_error"] = f"{folder}: {error}"
    facts["locks"] = {spec.label: node_runtime(device, interpreters).lock_sha256(spec) for spec in workers}
    return facts


def node_runtime(device: str, interpreters: dict[str, Path]) -> LocalRuntime:
    """The local runtime a node starts its runs' workers with: its own cache, the study's device."""
    runtime = LocalRuntime(cache_root(), interpreters)
    runtime.use_device(device)
    return runtime


def prepare_node(workers: list[WorkerSpec], device: str, interpreters: dict[str, Path]) -> None:
    """Build what this node lacks of the workers' environments (once, before its first run)."""
    node_runtime(device, interpreters).prepare(workers)


def differences(driver: dict, node: dict) -> list[str]:
    """What makes `node` unfit to train runs the driver compares; [] when nothing."""
    problems = []
    if node.get("store_sha256") != driver["store_sha256"]:
        problems.append(node.get("store_error") or f"its pixel store hashes to {str(node['store_sha256'])[:16]}, "
                        f"the driver's to {driver['store_sha256'][:16]}")
    ours, theirs = driver["git"], node["git"]
    if theirs.get("commit") != ours.get("commit"):
        problems.append(f"its checkout is at commit {theirs.get('commit')}, the driver's at {ours.get('commit')}")
    elif theirs.get("changes_sha256") != ours.get("changes_sha256"):
        def changes(state: dict) -> str:
            digest = state.get("changes_sha256")
            return f"uncommitted changes {digest[:16]}" if digest else "no uncommitted changes"

        problems.append(f"its checkout has {changes(theirs)}, the driver's {changes(ours)}")
    for label, lock in driver["locks"].items():
        if node["locks"].get(label) != lock:
            problems.append(f"{label}'s environment lock {str(node['locks'].get(label))[:16]} is not the driver's "
                            f"{lock[:16]} (another pin)")
    return problems


def mixed_gpu_models(facts: list[dict]) -> str | None:
    """The refusal when the nodes' GPUs are not all one model (the model would be credited to the
    frameworks); None when they are, or when no node names its GPUs (declared only, or none)."""
    models: dict[str, list[str]] = {}
    for fact in facts:
        for model in dict.fromkeys(fact["gpu_models"]):
            models.setdefault(model, []).append(fact["host"])
    if len(models) < 2:
        return None
    listed = "; ".join(f"{model} on {', '.join(hosts)}" for model, hosts in sorted(models.items()))
    return f"the nodes have different GPU models ({listed}); the model would be credited to the frameworks"
