"""The Ray executor: every run of a study an actor of its own, placed by Ray, retried when lost.

Each run's actor reserves one GPU (on a cluster without GPUs: `--cpus-per-run` CPUs; exclusive
placement: a whole node), and on its node does what the sequential executor does here: it starts the
run's worker with the local runtime (its own pinned environment, a Unix socket, the actor's pid as
the worker's parent, the driver's thread variables), builds the run's batches with the harness's own
code from the node's copy of the pixel store, trains, and sends back the run's files and results.
The driver commits them (harness.study.ledger) as they arrive. Before any run, every node is checked
against the driver (harness.cluster.nodes) and refused if its data, code or environments differ.

A run whose worker or node is lost is redone, at most `--retries` times, wherever Ray places it; its
partial timings are discarded and each attempt's cause is recorded. When a run's retries are
exhausted the study ends: every finished run stays committed, the runs still in flight are stopped,
and the failure is named. Closing the executor kills every actor it made and stops a Ray it started.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import OutOfDiskError, RayActorError, RayError, RayTaskError
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

from cxrbench_worker.host import cuda_device_names
from harness.cluster import nodes
from harness.cluster.reservation import reservation_per_run
from harness.cluster.settings import ClusterRefused, ClusterSettings
from harness.config import cache_root
from harness.data.pixel_store import PixelStore, open_store
from harness.progress import announce
from harness.records.run_directory import RunDirectory
from harness.runtime.client import WorkerError
from harness.runtime.registry import WorkerSpec
from harness.study.executor import OnFinished, OnStarted, StudyFailed
from harness.study.ledger import staging_folder
from harness.study.runs import PlannedRun, StudyInputs, apply_thread_environment, execute_run


class RunAttemptFailed(RuntimeError):
    """One attempt of a run failed on its node: why, whether redoing it could help, and its worker's log."""

    def __init__(self, message: str, retryable: bool, log: bytes | None = None, log_path: str = "") -> None:
        super().__init__(message)
        self.message, self.retryable, self.log, self.log_path = message, retryable, log, log_path

    def __reduce__(self) -> tuple[Callable[..., RunAttemptFailed], tuple[str, bool, bytes | None, str]]:
        return RunAttemptFailed, (self.message, self.retryable, self.log, self.log_path)


@ray.remote(num_cpus=0)
def _node_facts(store: nodes.StoreLocation, workers: list[WorkerSpec], device: str,
                interpreters: dict[str, Path]) -> dict:
    return {"node_id": ray.get_runtime_context().get_node_id(), **nodes.node_facts(store, workers, device,
                                                                                     interpreters)}


@ray.remote(num_cpus=0)
def _prepare_node(workers: list[WorkerSpec], device: str, interpreters: dict[str, Path]) -> None:
    nodes.prepare_node(workers, device, interpreters)


@ray.remote(max_restarts=0, max_task_retries=0)
class RunActor:
    """One run on one node (see the module's docstring); made for its run and killed after it."""

    def where(self) -> dict:
        """Where Ray placed this run: node, GPUs reserved, CPUs, this actor's pid."""
        context = ray.get_runtime_context()
        return {"node_id": context.get_node_id(), "node_ip": ray.util.get_node_ip_address(),
                "host": socket.gethostname(), "gpu_ids": [str(gpu) for gpu in ray.get_gpu_ids()],
                "gpu_models": cuda_device_names(), "cpus": os.cpu_count(), "actor_pid": os.getpid()}

    def run(self, run: PlannedRun, inputs: StudyInputs, start: bytes, store: nodes.StoreLocation, device: str,
            interpreters: dict[str, Path]) -> dict:
        """Execute `run` here from its seed's starting weights `start`; returns its outcome and its
        files, or raises RunAttemptFailed."""
        inputs = replace(inputs, starts={run.training_run.seed: start})
        apply_thread_environment(inputs.thread_environment)  # not the OMP_NUM_THREADS Ray set for this actor
        staging = Path(tempfile.mkdtemp(prefix="cxrbench-run-"))
        try:
            outcome = execute_run(run, inputs, open_store(store.resolve()), nodes.node_runtime(device, interpreters),
                                  staging)
            files = {path.relative_to(staging).as_posix(): path.read_bytes()
                     for path in sorted(staging.rglob("*")) if path.is_file()}
            return {"outcome": outcome, "files": files}
        except BaseException as error:
            log = (staging / "worker.log").read_bytes() if (staging / "worker.log").is_file() else None
            # A lost or stalled worker may do better elsewhere; other errors (other bytes, a refused
            # setting) would fail again anywhere.
            raise RunAttemptFailed(f"{type(error).__name__}: {error}", isinstance(error, WorkerError), log,
                                   str(staging / "worker.log")) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _connect(address: str) -> bool:
    """Join the cluster at `address` ("auto": one that is running, if any); returns True when a Ray of
    our own had to be started for this study."""
    if ray.is_initialized():
        return False
    # The driver says when each run starts and ends; the actors' own output stays in each node's Ray logs.
    quiet: dict[str, Any] = {"logging_level": "WARNING", "log_to_driver": False}
    if address != "auto":
        ray.init(address=address, **quiet)
        return False
    try:
        ray.init(address="auto", **quiet)
        return False
    except ConnectionError:
        ray.init(include_dashboard=False, **quiet)
        return True


def _alive_nodes() -> list[dict]:
    return [node for node in ray.nodes() if node.get("Alive")]


class RayExecutor:
    """Runs a study's runs on a Ray cluster (see the module's docstring)."""

    name = "ray"

    def __init__(self, settings: ClusterSettings) -> None:
        self._settings = settings
        self._started_ray = False
        self._location: nodes.StoreLocation | None = None
        self._reservation: dict[str, float] = {}
        self._actors: dict[str, Any] = {}  # run key -> its live actor
        self._groups: dict[tuple[int, int], PlacementGroup] = {}
        self.facts: dict = {"placement": settings.placement, "retries": settings.retries}

    # --- before any run: the nodes ---------------------------------------------------------------

    def prepare(self, workers: list[WorkerSpec], store: PixelStore) -> None:
        """Join the cluster, check every node against this driver (ClusterRefused naming each node at
        fault), build the workers' environments where a node lacks them, and size each run's reservation."""
        self._started_ray = _connect(self._settings.address)
        self.facts.update(address=self._settings.address, started_ray=self._started_ray)
        self._location = self._check_nodes(store, workers)
        announce("ray: every node matches; preparing the worker environments on each")
        ray.get([_prepare_node.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                 .remote(workers, self._settings.device, self._settings.interpreters) for node in _alive_nodes()])
        self._reservation = reservation_per_run([node["Resources"] for node in _alive_nodes()], self._settings,
                                                len(workers))
        self.facts["reservation_per_run"] = self._reservation

    def _check_nodes(self, store: PixelStore, workers: list[WorkerSpec]) -> nodes.StoreLocation:
        location = nodes.StoreLocation.of(store.path, cache_root())
        interpreters = self._settings.interpreters
        driver = nodes.node_facts(location, workers, self._settings.device, interpreters)
        driver["store_sha256"] = store.content_sha256
        alive = _alive_nodes()
        announce(f"ray: checking {len(alive)} node(s) against this driver (pixel store digest, commit, environment "
                 "locks; environments are built where missing)")
        facts = ray.get([_node_facts.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            node["NodeID"], soft=False)).remote(location, workers, self._settings.device, interpreters)
            for node in alive])
        problems = [f"node {fact['host']} ({fact['node_id'][:12]}): {problem}"
                    for fact in facts for problem in nodes.differences(driver, fact)]
        mixed = nodes.mixed_gpu_models(facts)
        if mixed and not self._settings.allow_mixed_gpus:
            problems.append(f"{mixed} (--allow-mixed-gpus to run anyway)")
        self.facts["mixed_gpu_models"] = mixed
        if problems:
            raise ClusterRefused("ray: refusing the study before any training, the cluster's nodes do not match this "
                                 f"driver (store {location.describe()}):\n" + "\n".join(f"  {p}" for p in problems))
        resources = {node["NodeID"]: node["Resources"] for node in alive}
        self.facts["nodes"] = [{**fact, "resources": resources.get(fact["node_id"], {})} for fact in facts]
        return location

    # --- the runs ---------------------------------------------------------------------------------

    def execute(self, runs: list[PlannedRun], inputs: StudyInputs, run_dir: RunDirectory, on_started: OnStarted,
                on_finished: OnFinished) -> None:
        """Submit every run at once (Ray queues what does not fit) and commit each as it returns."""
        assert self._location is not None, "prepare() first"
        if not runs:
            return
        # Once, not once per run; and each run gets its own seed's starting weights (about 100 MB for
        # ResNet-50) as an object of its own, not every seed's.
        study = _Submissions(runs, ray.put(replace(inputs, starts={})),
                             {seed: ray.put(weights) for seed, weights in inputs.starts.items()})
        if self._settings.placement == "grouped":
            for pairing in dict.fromkeys(run.pairing for run in runs):
                size = sum(1 for run in runs if run.pairing == pairing)
                self._groups[pairing] = placement_group([dict(self._reservation)] * size, strategy="STRICT_PACK")
        for run in runs:
            self._submit(study, run)
        announce(f"ray: {len(runs)} runs submitted, each reserving "
                 f"{', '.join(f'{amount:g} {kind}' for kind, amount in self._reservation.items())}"
                 f" ({self._settings.placement} placement)")
        while study.calls:
            ready, _ = ray.wait(list(study.calls), num_returns=1, timeout=5.0)
            for ref in ready:
                kind, run = study.calls.pop(ref)
                if kind == "where":
                    self._placed(study, run, ref, on_started)
                else:
                    self._returned(study, run, ref, run_dir, on_finished)

    def _submit(self, study: _Submissions, run: PlannedRun) -> None:
        """Make the run's actor (a first attempt of a grouped run in its group's bundle; a retry
        wherever Ray has room) and ask it where it is, then to run."""
        options: dict[str, Any] = {"num_cpus": self._reservation.get("CPU", 0),
                                   "num_gpus": self._reservation.get("GPU", 0)}
        if run.pairing in self._groups and not study.attempts[run.key]:
            bundle = study.bundles.get(run.pairing, 0)
            study.bundles[run.pairing] = bundle + 1
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                self._groups[run.pairing], placement_group_bundle_index=bundle)
        actor = RunActor.options(**options).remote()  # type: ignore[attr-defined]
        self._actors[run.key] = actor
        study.calls[actor.where.remote()] = ("where", run)
        study.calls[actor.run.remote(run, study.inputs, study.starts[run.training_run.seed], self._location,
                                     self._settings.device, self._settings.interpreters)] = ("run", run)

    def _placed(self, study: _Submissions, run: PlannedRun, ref: Any, on_started: OnStarted) -> None:
        try:
            study.placed[run.key] = ray.get(ref)
        except RayError:
            return  # the run call reports what happened to the actor
        on_started(run, {**study.placed[run.key], "attempt": len(study.attempts[run.key]) + 1,
                         "previous_attempts": study.attempts[run.key]})

    def _returned(self, study: _Submissions, run: PlannedRun, ref: Any, run_dir: RunDirectory,
                  on_finished: OnFinished) -> None:
        """A run's call returned: commit it, or record the failed attempt and redo it or end the study."""
        where = study.placed.get(run.key, {})
        try:
            payload = ray.get(ref)
        except (RayActorError, RayTaskError) as error:
            if self._lost(run, error, study.attempts, where, run_dir):
                self._submit(study, run)
                return
            stopped = {other.key: [*study.attempts[other.key], {"attempt": len(study.attempts[other.key]) + 1,
                                                                "outcome": "stopped",
                                                                **_where(study.placed.get(other.key, {}))}]
                       for _, other in study.calls.values() if other.key != run.key}
            study.calls.clear()
            self.close_actors()
            raise StudyFailed(self._failure_message(run, study.attempts[run.key]),
                              {run.key: study.attempts[run.key], **stopped}) from None
        ray.kill(self._actors.pop(run.key))
        study.attempts[run.key].append({"attempt": len(study.attempts[run.key]) + 1, "outcome": "finished",
                                        **_where(where)})
        staging = staging_folder(run_dir, run)  # the node's files, here, then committed like a local run's
        shutil.rmtree(staging, ignore_errors=True)
        for relative, data in payload["files"].items():
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            (staging / relative).write_bytes(data)
        outcome = payload["outcome"]
        outcome["execution"].update(placement=self._settings.placement, **where)
        on_finished(run, staging, {**outcome, "attempts": study.attempts[run.key]})
        study.finished += 1
        announce(f"ray: {study.finished}/{len(study.runs)} finished: {run.describe()} on {where.get('host')} "
                 f"(node {str(where.get('node_id'))[:8]}, GPU {','.join(where.get('gpu_ids') or []) or '-'})")
        if run.pairing in self._groups and all(other.key not in self._actors for other in study.runs
                                               if other.pairing == run.pairing):
            remove_placement_group(self._groups.pop(run.pairing))

    def _lost(self, run: PlannedRun, error: RayError, attempts: dict[str, list[dict]], where: dict,
              run_dir: RunDirectory) -> bool:
        """Record a failed attempt (its worker's log kept as workers/<run>.attempt<N>.log); True when it
        is to be redone: a lost worker or node, with retries left."""
        cause = error.cause if isinstance(error, RayTaskError) and error.cause is not None else error
        retryable = cause.retryable if isinstance(cause, RunAttemptFailed) else isinstance(error, RayActorError)
        message = cause.message if isinstance(cause, RunAttemptFailed) else _ray_failure(error, cause)
        number = len(attempts[run.key]) + 1
        entry: dict[str, Any] = {"attempt": number, "outcome": "failed", "cause": message, **_where(where)}
        if not where:  # e.g. its node died while the actor was still starting: Ray never told us where it was
            entry["placement"] = "unknown: the attempt ended before its actor reported its node"
        if isinstance(cause, RunAttemptFailed) and cause.log is not None:  # kept even when empty: it says so
            log = run_dir.path / "workers" / f"{run.key}.attempt{number}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_bytes(cause.log)
            entry["log"] = str(log.relative_to(run_dir.path))
            # The node's copy is gone with the attempt; name the one kept in the run directory.
            entry["cause"] = message = message.replace(cause.log_path, str(log)) if cause.log_path else message
        entry["retried"] = retryable and number <= self._settings.retries
        attempts[run.key].append(entry)
        actor = self._actors.pop(run.key, None)
        if actor is not None:
            ray.kill(actor)
        print(f"ray: {run.describe()}, attempt {number} failed: {message}"
              + ("; redoing it" if entry["retried"] else ""), file=sys.stderr)
        return bool(entry["retried"])

    @staticmethod
    def _failure_message(run: PlannedRun, attempts: list[dict]) -> str:
        causes = "; ".join(f"attempt {a['attempt']}: {a['cause']}" for a in attempts)
        why = "retries exhausted" if len(attempts) > 1 else "not a lost worker or node, so not retried"
        return f"{run.describe()} could not finish ({why}): {causes}"

    def close_actors(self) -> None:
        """Kill every actor of this study and remove its placement groups (their workers exit with them)."""
        for actor in self._actors.values():
            try:
                ray.kill(actor)
            except RayError:
                pass
        self._actors.clear()
        for group in self._groups.values():
            try:
                remove_placement_group(group)
            except RayError:
                pass
        self._groups.clear()

    def close(self) -> None:
        """Nothing of the study outlives it: its actors, and a Ray it started."""
        if ray.is_initialized():
            self.close_actors()
            ray.shutdown()


class _Submissions:
    """The state of one execute(): the runs, their calls in flight, where each was placed, its attempts."""

    def __init__(self, runs: list[PlannedRun], inputs: Any, starts: dict[int, Any]) -> None:
        self.runs = runs
        self.inputs = inputs  # the StudyInputs without the weights, in the object store
        self.starts = starts  # training seed -> its starting weights, in the object store
        self.calls: dict[Any, tuple[str, PlannedRun]] = {}  # object ref -> ("where" or "run", its run)
        self.placed: dict[str, dict] = {}  # run key -> where its current attempt runs
        self.attempts: dict[str, list[dict]] = {run.key: [] for run in runs}
        self.bundles: dict[tuple[int, int], int] = {}  # grouped: the next bundle of each (seed, fold)'s group
        self.finished = 0


def _where(placed: dict) -> dict:
    """The placement facts an attempt records."""
    return {key: placed[key] for key in ("node_id", "host", "gpu_ids") if key in placed}


def _ray_failure(error: RayError, cause: BaseException) -> str:
    """What went wrong, in words, for an attempt that Ray (not the worker) ended."""
    if isinstance(error, RayActorError):
        return (f"{type(error).__name__}: the run's actor was lost (its node or process died): "
                f"{_first_line(error)}")
    message = f"{type(error).__name__}: the run's actor raised {type(cause).__name__}: {_first_line(cause)}"
    if isinstance(cause, OutOfDiskError):
        message += (" (a node's disk is fuller than Ray's local_fs_capacity_threshold, 95% by default: free space"
                    " there, or start Ray with RAY_local_fs_capacity_threshold set higher)")
    return message


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [""])[0]
