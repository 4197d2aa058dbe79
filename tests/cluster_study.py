"""Run inside the loopback Ray cluster (tests/ray_cluster.py): a `--runtime ray` study, with an accident.

    python cluster_study.py ACCIDENT OUT [HARNESS ARGS...]

ACCIDENT is `none`, `kill-worker` (SIGKILL a null_b worker process once it has trained a while),
`kill-node` (SIGKILL a non-head node's raylet while runs are on it) or `exhaust` (the nodes make
every null_c worker crash; the harness is given no such variable). The harness runs as a subprocess;
afterwards this prints one JSON line: its exit status and output, and what was left running (worker
processes, live RunActor actors) once it had ended.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ray

from ray_cluster import raylet_pids


def processes(word: str) -> dict[int, str]:
    """This namespace's processes whose command line contains `word`: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if word in line:
                found[int(entry.name)] = line
    return found


def wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def trained_a_while(pid: int) -> bool:
    """True once worker `pid` serves (its log, its stdout, says so) and has run 1.5 s or more: it trains
    by then, steps being slowed (a worker still starting, on a loaded machine, is left alone)."""
    log = Path(os.readlink(f"/proc/{pid}/fd/1"))
    if not log.is_file() or b" serving on " not in log.read_bytes():
        return False
    started = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - started / os.sysconf("SC_CLK_TCK") > 1.5


def parent_command(pid: int) -> str:
    parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
    return Path(f"/proc/{parent}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def kill_a_worker(harness: subprocess.Popen) -> dict:
    def victim():  # a run's worker (an actor's child), not the driver's parity probe
        for pid, line in processes("cxrbench_worker").items():
            try:
                if "/null_b " in line and "RunActor" in parent_command(pid) and trained_a_while(pid):
                    return pid
            except OSError:
                continue
        return None

    pid = wait_for(victim, 240, "a null_b worker that trains")
    os.kill(pid, signal.SIGKILL)
    return {"killed_worker": pid}


def kill_a_node(harness: subprocess.Popen) -> dict:
    ray.init(logging_level="ERROR", log_to_driver=False)
    head = next(node["NodeID"] for node in ray.nodes() if "node:__internal_head__" in node["Resources"])
    other = next(node_id for node_id in raylet_pids() if node_id != head)
    # Runs are on it: a worker of the study is up (each node has two of the four fake GPUs, so a full
    # cluster has runs on both).
    def training() -> list[int]:
        found = []
        for pid in processes("cxrbench_worker"):
            try:
                if "RunActor" in parent_command(pid) and trained_a_while(pid):
                    found.append(pid)
            except OSError:
                continue
        return found

    wait_for(lambda: len(training()) >= 4, 240, "four training runs")
    os.kill(raylet_pids()[other], signal.SIGKILL)
    ray.shutdown()
    return {"killed_node": other, "head": head}


def leftovers() -> dict:
    """What is still running of the study after the harness ended: worker processes and RunActor actors."""
    deadline = time.monotonic() + 15  # a worker notices its parent's death within a second or two
    while processes("cxrbench_worker") and time.monotonic() < deadline:
        time.sleep(0.2)
    ray.init(logging_level="ERROR", log_to_driver=False)
    # The GCS's actor table (the state API needs the dashboard, which the loopback cluster leaves out).
    from ray._private.state import actors

    alive = [actor.get("ActorClassName", actor.get("ClassName", "?")) for actor in actors().values()
             if actor.get("State") in ("ALIVE", "PENDING_CREATION", "RESTARTING", 1, 2, 3)]
    ray.shutdown()
    return {"worker_processes": list(processes("cxrbench_worker").values()), "alive_actors": alive,
            "actor_processes": list(processes("ray::RunActor").values())}


def main() -> None:
    accident, out, arguments = sys.argv[1], sys.argv[2], sys.argv[3:]
    environment = dict(os.environ)
    environment.pop("CXRBENCH_NULL_EXIT_AT_STEP", None)  # for the nodes' workers only, never the driver's
    harness = subprocess.Popen([sys.executable, "-m", "harness.cli", "benchmark", "--runtime", "ray", "--out", out,
                                *arguments], env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    accidents = {"kill-worker": kill_a_worker, "kill-node": kill_a_node}
    done = accidents[accident](harness) if accident in accidents else {}
    stdout, stderr = harness.communicate(timeout=600)
    print(json.dumps({"returncode": harness.returncode, "stdout": stdout, "stderr": stderr, **done,
                      **leftovers()}))


if __name__ == "__main__":
    main()
