"""`--runtime ray` on a real two-node Ray cluster on loopback (tests/ray_cluster.py), four fake GPUs.

A null-worker study (3 workers x 2 seeds x 2 folds = 12 runs) runs with never more runs at once than
GPUs and never two on one GPU, on the same batches as under the local runtime; a worker killed, a
node lost and a run that keeps failing end as docs/CLUSTER.md says, with nothing left running; a
node whose pixel store differs by one byte is refused before any training.
"""

from __future__ import annotations

import json
import re
import shutil
from itertools import combinations
from pathlib import Path

import pytest

from conftest import REPO_ROOT, SMALL_RUN, run_harness
from harness.config import cache_root
from harness.data.datasets import load_dataset
from null_copies import null_copies
from ray_cluster import run_in_loopback_cluster

pytestmark = pytest.mark.cluster

WORKERS = ["null", "null_b", "null_c"]
# The workers compute on the CPU beside the fake GPUs: one thread each, within the one CPU each run reserves.
STUDY = ["--workers", ",".join(WORKERS), "--epochs", "2", *SMALL_RUN, "--seeds", "0,1", "--folds", "2",
         "--bootstrap", "0", "--deterministic", "--threads", "1"]
SCRIPT = Path(__file__).resolve().parent / "cluster_study.py"


def cluster_study(tmp_path: Path, accident: str, step_seconds: float, extra: dict[str, str] | None = None,
                  arguments: list[str] | None = None, **cluster) -> tuple[dict, Path | None]:
    """Run the study (with `arguments` after STUDY's) in a fresh loopback cluster with `accident`;
    returns the script's summary and the run directory (None when none was made)."""
    environment = {**null_copies(tmp_path / "workers", WORKERS[1:]), "CXRBENCH_NULL_STEP_SECONDS": str(step_seconds),
                   **(extra or {})}
    out = tmp_path / "results"
    done = run_in_loopback_cluster(SCRIPT, [accident, str(out), *STUDY, *(arguments or [])], env=environment,
                                   timeout=540, cwd=tmp_path, **cluster)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    runs = [path for path in out.glob("*") if (path / "run.json").exists()] if out.exists() else []
    return summary, runs[0] if runs else None


def nothing_left(summary: dict) -> None:
    assert summary["worker_processes"] == [], "worker processes outlived the study"
    assert "RunActor" not in summary["alive_actors"] and summary["actor_processes"] == [], "actors outlived the study"


def executions(run: Path) -> dict[str, dict]:
    return {key: entry["execution"] for key, entry in json.loads((run / "run.json").read_text())["runs"].items()}


def digests_by_pairing(run: Path) -> dict[tuple, dict[str, list[str]]]:
    """(seed, fold) -> worker -> each epoch's batch order digest."""
    found: dict[tuple, dict[str, list[str]]] = {}
    for worker, result in json.loads((run / "metrics.json").read_text())["workers"].items():
        for entry in result["runs"]:
            found.setdefault((entry["seed"], entry["fold"]), {})[worker] = entry["batch_order_sha256"]
    return found


def test_a_study_on_two_nodes_never_oversubscribes_a_gpu_and_trains_on_the_local_runtimes_batches(tmp_path):
    summary, run = cluster_study(tmp_path, "none", 0.05)
    assert summary["returncode"] == 0, summary["stderr"][-3000:]
    nothing_left(summary)
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed" and record["study"]["executor"] == "ray"
    assert len(record["study"]["nodes"]) == 2 and record["study"]["reservation_per_run"] == {"GPU": 1.0, "CPU": 1.0}
    ran = executions(run)
    assert len(ran) == 12 and all(len(entry["gpu_ids"]) == 1 for entry in ran.values())
    # Never more runs at once than the four GPUs, never two at once on one (node, GPU).
    moments = sorted({entry["started"] for entry in ran.values()})
    busiest = max(sum(entry["started"] <= moment < entry["finished"] for entry in ran.values()) for moment in moments)
    assert 2 <= busiest <= 4, busiest
    for (key_a, a), (key_b, b) in combinations(ran.items(), 2):
        if (a["node_id"], a["gpu_ids"]) == (b["node_id"], b["gpu_ids"]):
            assert a["finished"] <= b["started"] or b["finished"] <= a["started"], f"{key_a} and {key_b} shared a GPU"
    assert {entry["node_id"] for entry in ran.values()} == {node["node_id"] for node in record["study"]["nodes"]}
    shared = record["study"]["neighbours"]
    assert set(shared) == set(ran) and any(shared.values())  # who shared a node with whom is on record
    # Each (seed, fold): every worker the same batches, and the same as the local runtime gives.
    on_ray = digests_by_pairing(run)
    assert len(on_ray) == 4 and all(len({tuple(d) for d in per.values()}) == 1 for per in on_ray.values())
    local = run_harness(["benchmark", *STUDY, "--out", str(tmp_path / "local")], REPO_ROOT,
                        null_copies(tmp_path / "workers", WORKERS[1:]))
    assert local.returncode == 0, local.stderr
    (local_run,) = (tmp_path / "local").iterdir()
    assert digests_by_pairing(local_run) == on_ray


def attempts(run: Path) -> dict[str, list[dict]]:
    return {key: entry["attempts"] for key, entry in json.loads((run / "run.json").read_text())["runs"].items()
            if "attempts" in entry}


def test_a_run_whose_worker_is_killed_mid_epoch_is_redone_and_the_study_completes(tmp_path):
    summary, run = cluster_study(tmp_path, "kill-worker", 0.2, arguments=["--seeds", "0"])
    assert summary["returncode"] == 0, summary["stderr"][-3000:]
    nothing_left(summary)
    retried = {key: tries for key, tries in attempts(run).items() if len(tries) > 1}
    assert len(retried) == 1, retried
    ((key, (failed, finished)),) = retried.items()
    assert key.startswith("null_b/") and failed["outcome"] == "failed" and finished["outcome"] == "finished"
    assert "WorkerError" in failed["cause"] and "killed by signal SIGKILL" in failed["cause"]
    assert (run / failed["log"]).is_file()  # the failed attempt's worker log, kept
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    assert len(list((run / "runs").rglob("*.json"))) == 6 and not (run / "unfinished").exists()


def test_runs_on_a_lost_node_are_redone_on_the_other(tmp_path):
    summary, run = cluster_study(tmp_path, "kill-node", 0.2, arguments=["--seeds", "0"])
    assert summary["returncode"] == 0, summary["stderr"][-3000:]
    nothing_left(summary)
    retried = {key: tries for key, tries in attempts(run).items() if len(tries) > 1}
    assert retried, "no run was on the lost node"
    for tries in retried.values():
        assert tries[0]["outcome"] == "failed" and "actor was lost" in tries[0]["cause"]
        # Where the actor had reported its node, it was the lost one; an actor still starting when its node
        # died never reported one (seen under load), and the attempt says so rather than naming a node.
        assert tries[0].get("node_id", summary["killed_node"]) == summary["killed_node"]
        assert "node_id" in tries[0] or tries[0]["placement"].startswith("unknown")
        assert tries[-1]["outcome"] == "finished" and tries[-1]["node_id"] == summary["head"]
    assert json.loads((run / "run.json").read_text())["status"] == "completed"


def test_a_run_that_fails_on_every_attempt_ends_the_study_and_keeps_the_finished_runs(tmp_path):
    summary, run = cluster_study(tmp_path, "exhaust", 0.05, {"CXRBENCH_NULL_EXIT_AT_STEP": "null_c:3"},
                                 arguments=["--seeds", "0"])
    assert summary["returncode"] == 1, summary["stderr"][-3000:]
    nothing_left(summary)
    assert "could not finish (retries exhausted): attempt 1: " in summary["stderr"]
    assert "attempt 3: " in summary["stderr"] and "null_c (fold " in summary["stderr"]
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "failed" and "retries exhausted" in record["error"]
    (exhausted,) = [entry for entry in record["runs"].values() if entry["status"] == "failed"]
    assert [attempt["outcome"] for attempt in exhausted["attempts"]] == ["failed"] * 3
    assert all((run / attempt["log"]).is_file() for attempt in exhausted["attempts"])
    stopped = [entry for entry in record["runs"].values() if entry["status"] == "stopped"]
    assert all(entry["attempts"][-1]["outcome"] == "stopped" for entry in stopped)
    finished = {path.parent.name for path in (run / "runs").rglob("*.json")}
    assert finished and "null_c" not in finished  # what finished is kept; null_c never did


def refused_study(tmp_path: Path, workers: str, node_setup: dict[int, str]) -> str:
    """A one-run study on the loopback cluster whose node 1 was given `node_setup`: its stderr, once refused."""
    out = tmp_path / "results"
    done = run_in_loopback_cluster("-m", ["harness.cli", "benchmark", "--runtime", "ray", "--workers", workers,
                                          "--epochs", "1", *SMALL_RUN, "--bootstrap", "0", "--out", str(out)],
                                   cwd=tmp_path, timeout=300, node_setup=node_setup)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "ray: refusing the study before any training, the cluster's nodes do not match this driver" in done.stderr
    assert not out.exists() or not list(out.iterdir()), "refused, yet a run directory was made"
    return done.stderr


def test_a_node_whose_pixel_store_differs_by_one_byte_is_refused_before_training(tmp_path):
    store = load_dataset("phantom", 32, 0, cache_root(), 40, False)  # SMALL_RUN's
    corrupt = tmp_path / "corrupt"
    shutil.copytree(store.path, corrupt)
    with open(corrupt / "pixels.u8", "r+b") as handle:
        handle.seek(1234)
        byte = handle.read(1)[0]
        handle.seek(1234)
        handle.write(bytes([byte ^ 1]))
    # Node 1 sees the corrupted copy at the store's own path; the head node and the driver see the store.
    stderr = refused_study(tmp_path, "null", {1: f"mount --bind {corrupt} {store.path}"})
    problems = [line for line in stderr.splitlines() if line.startswith("  node ")]
    assert len(problems) == 1 and re.search(r"its pixel store hashes to [0-9a-f]{16}, the driver's to "
                                            + store.content_sha256[:16], problems[0])


@pytest.mark.framework
def test_a_node_with_a_changed_pin_is_refused_before_training(tmp_path):
    lock = REPO_ROOT / "workers" / "pytorch" / "locks" / "2.14.1-cpu.txt"
    changed = tmp_path / "lock.txt"
    # One pin of the lock changed on node 1 (its header still matches the requirements: not stale, just other).
    text, count = re.subn(r"^filelock==[^ ]+", "filelock==3.0.0", lock.read_text(), count=1, flags=re.MULTILINE)
    assert count == 1
    changed.write_text(text)
    stderr = refused_study(tmp_path, "pytorch", {1: f"mount --bind {changed} {lock}"})
    problems = [line for line in stderr.splitlines() if line.startswith("  node ")]
    assert len({line.partition(")")[0] for line in problems}) == 1  # one node refused, the head node not
    # Its checkout is another too: the same commit with that file changed.
    assert any("pytorch's environment lock" in line and "(another pin)" in line for line in problems), problems
    assert any("its checkout has uncommitted changes" in line for line in problems), problems


def spans(run: Path) -> dict[str, dict]:
    """Each run's node and (started, finished), by run key."""
    return {key: {"node": entry["node_id"], "span": (entry["started"], entry["finished"])}
            for key, entry in executions(run).items()}


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_grouped_placement_runs_the_workers_of_one_seed_and_fold_side_by_side_on_one_node(tmp_path):
    summary, run = cluster_study(tmp_path, "none", 0.1, arguments=["--seeds", "0", "--placement", "grouped"],
                                 gpus_per_node=3, cpus_per_node=3)
    assert summary["returncode"] == 0, summary["stderr"][-3000:]
    nothing_left(summary)
    ran = spans(run)
    for fold in ("fold1", "fold2"):
        group = [entry for key, entry in ran.items() if key.endswith(fold)]
        assert len(group) == 3 and len({entry["node"] for entry in group}) == 1  # same node, same neighbours
        assert max(entry["span"][0] for entry in group) < min(entry["span"][1] for entry in group)  # at once
    record = json.loads((run / "run.json").read_text())
    assert record["study"]["placement"] == "grouped"
    assert all(len(neighbours) >= 2 for neighbours in record["study"]["neighbours"].values())


def test_exclusive_placement_runs_one_run_per_node_at_a_time(tmp_path):
    summary, run = cluster_study(tmp_path, "none", 0.05, arguments=["--seeds", "0", "--placement", "exclusive"])
    assert summary["returncode"] == 0, summary["stderr"][-3000:]
    ran = spans(run)
    assert len(ran) == 6 and len({entry["node"] for entry in ran.values()}) == 2
    for (key_a, a), (key_b, b) in combinations(ran.items(), 2):
        assert a["node"] != b["node"] or not overlap(a["span"], b["span"]), f"{key_a} and {key_b} shared a node"
    record = json.loads((run / "run.json").read_text())
    assert record["study"]["reservation_per_run"] == {"GPU": 2, "CPU": 1}
    assert all(neighbours == [] for neighbours in record["study"]["neighbours"].values())
