"""A real Ray cluster of several nodes on this machine, for the tests of `--runtime ray`.

`run_in_loopback_cluster(script, args)` starts a head node and worker nodes with `ray start`, each
with fake GPUs, runs `python SCRIPT ARGS` against them (RAY_ADDRESS set), and tears everything down.
All of it happens inside a private network, PID and mount namespace (`unshare`, which needs root):
its only interface is `lo`, so no Ray port is reachable from outside, and when the command ends the
namespace's first process exits and the kernel kills every daemon Ray left behind.

Inside, every node is a separate raylet on 127.0.0.1 sharing one temporary folder and session (Ray
gives the second node's sockets other names: raylet.1 beside raylet). A script finds each
node's raylet with `raylet_pids()` to kill one (a lost node); `ray.nodes()` marks it dead after about
3 s (HEALTH_CHECK below; Ray's defaults take about 16 s). Token authentication is on, as on a real
cluster (docs/CLUSTER.md), with a fresh token in RAY_AUTH_TOKEN that everything inside inherits.

Measured on the 2-core development machine (Ray 2.60.0, ray[default]): two nodes are up in 12-14 s on
an idle machine (15-22 s with a test run beside them) and stop in 1-2 s; all their processes together
hold 0.8 GB resident when idle, 1.1 GB at most with an actor and the idle workers Ray starts, one per
CPU (RSS summed, shared pages counted twice).
"""

from __future__ import annotations

import fcntl
import functools
import ipaddress
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

TESTS = Path(__file__).resolve().parent
GCS_PORT = 6379  # Ray's default: every cluster has a network namespace of its own, so none collide
ADDRESS = f"127.0.0.1:{GCS_PORT}"
START_FAILED = 97  # the wrapper's exit status when the cluster never came up (then the `ray start` logs follow)

# The GCS checks every raylet once a second and calls a node dead after 3 failed checks in a row. A
# killed raylet refuses the connection at once, so it is dead ~3 s later (Ray's defaults: every 3 s,
# 5 failures, ~16 s measured). A raylet that is alive but stalled by a loaded machine is only given up
# after 3 timeouts of 5 s, so a busy test machine does not lose nodes. Read by gcs_server at start
# (RAY_<name> overrides RayConfig's ray_config_def.h defaults), so they are exported before `ray start`.
# Ray refuses to create objects once the disk holding its temporary folder is 95% full (OutOfDiskError,
# which fails the run); a test machine's disk may be that full with the suite's framework environments,
# and the cluster's objects are small and never spilled. At 1 or more Ray never finds the disk full
# (src/ray/common/file_system_monitor.cc). Exported to every daemon with HEALTH_CHECK.
DISK_THRESHOLD = {"RAY_local_fs_capacity_threshold": "1"}
# Ray's daemons run at CLUSTER_NICENESS (below), ahead of the suite's CPU-bound tests: node health checks
# and actor starts must not wait behind a framework test. Ray lowers each worker process's priority
# by RAY_worker_niceness (an increment, 15 by default: core_worker.cc calls nice()), so its actors, each
# run's harness side and the framework worker it starts, ran 15 below everything else and waited behind
# it, and studies took 2-4 times as long until their waits ran out (issue 19). At -5 they took the CPU from
# latency-bound tests beside them (a browser test's page timed out). +5 puts them at 0: even with the rest.
CLUSTER_NICENESS = -5
WORKER_PRIORITY = {"RAY_worker_niceness": str(-CLUSTER_NICENESS)}
HEALTH_CHECK = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "5000",
    "RAY_health_check_failure_threshold": "3",
}

# Run by bash as the namespace's first process (PID 1): when it exits, everything in the namespace dies.
_WRAPPER = r"""
set -uo pipefail
ip link set lo up
node=(--node-ip-address 127.0.0.1 --num-cpus "$CLUSTER_CPUS" --num-gpus "$CLUSTER_GPUS"
      --object-store-memory "$CLUSTER_OBJECT_STORE_BYTES" --temp-dir "$CLUSTER_TMP" --disable-usage-stats)
fail() {
  echo "loopback Ray cluster: $1; the ray start logs follow" >&2
  tail -n 40 "$CLUSTER_TMP"/start-*.log >&2
  exit $START_FAILED
}
# No dashboard UI (its API server still starts: the job and state APIs need it).
# start_node INDEX ARGS...: `ray start ARGS`, or, when NODE_SETUP_<INDEX> holds commands, those first, in a
# mount namespace of that node's own (its daemons stay in it): how one node gets other files than the rest.
start_node() {
  local setup="NODE_SETUP_$1"
  shift
  if [ -n "${!setup:-}" ]; then
    unshare --mount --propagation private bash -c "${!setup}"' && exec "$0" start "$@"' "$RAY" "$@"
  else
    "$RAY" start "$@"
  fi
}
start_node 0 --head --port $GCS_PORT --include-dashboard false "${node[@]}" >"$CLUSTER_TMP/start-0.log" 2>&1 \
  || fail "the head node did not start"
pids=()
for ((i = 1; i < CLUSTER_NODES; i++)); do
  # One log monitor per machine (the head's) reads every node's logs: they share the session folder.
  start_node $i --address $RAY_ADDRESS --include-log-monitor false "${node[@]}" >"$CLUSTER_TMP/start-$i.log" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || fail "a worker node did not start"; done
"$PYTHON" - <<'EOF' || fail "not all $CLUSTER_NODES nodes came up alive"
import os, sys, time
import ray
ray.init(logging_level="ERROR", log_to_driver=False)
want, deadline = int(os.environ["CLUSTER_NODES"]), time.monotonic() + 60
while sum(node["Alive"] for node in ray.nodes()) < want:
    if time.monotonic() > deadline:
        sys.exit(f"alive after 60 s: {[node['Alive'] for node in ray.nodes()]}")
    time.sleep(0.2)
EOF
"$PYTHON" "$@"
status=$?
"$RAY" stop --force >/dev/null 2>&1
exit $status
"""


class LoopbackClusterError(RuntimeError):
    """The loopback cluster cannot be made here; the message says why and what to do."""


@functools.cache
def _check_namespaces() -> None:
    """Fail (never skip) where namespaces cannot be made: CI runs as root, and a silent skip would hide
    every cluster test."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        raise LoopbackClusterError("the loopback Ray cluster needs `unshare` (util-linux) and `ip` (iproute2) "
                                   "on PATH; install them, or deselect these tests with -m 'not cluster'")
    probe = subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount-proc", "ip", "link", "set", "lo", "up"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        raise LoopbackClusterError(
            "the loopback Ray cluster runs in private network and PID namespaces "
            f"(`unshare --net --pid --fork --mount-proc`), which this user cannot create: {probe.stderr.strip()}. "
            "Run the tests as root (CI does), or deselect them with -m 'not cluster'")


def _ray_script() -> Path:
    ray = Path(sys.executable).parent / "ray"
    if not ray.exists():
        raise LoopbackClusterError(f"no `ray` next to {sys.executable}: install the test extra, which brings "
                                   "Ray (`pip install -e '.[test]'`, as bin/bootstrap.sh does)")
    return ray


def _token_auth() -> dict[str, str]:
    """Token authentication on, with a fresh token, as docs/CLUSTER.md asks of a real cluster; explicit, so
    that a token left in ~/.ray/auth_token (which Ray 2.60 picks up when RAY_AUTH_MODE is unset) never
    decides it."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def run_in_loopback_cluster(script: str | Path, args: Sequence[str] = (), *, nodes: int = 2, gpus_per_node: int = 2,
                            cpus_per_node: int = 2, object_store_mb: int = 300, timeout: float = 180,
                            env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
                            node_setup: Mapping[int, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Start a Ray cluster of `nodes` nodes on 127.0.0.1 in a private namespace, run `python SCRIPT ARGS`
    against it and return the completed script (its exit status, stdout and stderr).

    The script (run by this interpreter, so `script="-m", args=["harness.cli", ...]` works too) finds the
    cluster through RAY_ADDRESS (`ray.init()` reads it); tests/ is on its PYTHONPATH, so it can
    `from ray_cluster import raylet_pids`. Ray writes to the driver's stdout on its own (a lost raylet's last
    log lines, even with log_to_driver=False): a script hands results back in a file. Each node declares
    `gpus_per_node` GPUs that do not exist: Ray schedules on them and sets CUDA_VISIBLE_DEVICES all the same.

    Raises LoopbackClusterError when the cluster cannot be made or never comes up (with the `ray start`
    logs), and subprocess.TimeoutExpired after `timeout` seconds, everything in the namespace killed by then.
    """
    _check_namespaces()
    ray = _ray_script()
    tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's Unix socket paths must fit in 107 bytes
    python_path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    # `env` may override the health checks, the disk threshold and the token settings, not the wrapper's.
    full_env = {**os.environ, **HEALTH_CHECK, **DISK_THRESHOLD, **WORKER_PRIORITY, **_token_auth(), **(env or {}),
                "RAY": str(ray), "PYTHON": sys.executable,
                "RAY_ADDRESS": ADDRESS, "GCS_PORT": str(GCS_PORT), "START_FAILED": str(START_FAILED),
                "CLUSTER_NODES": str(nodes), "CLUSTER_CPUS": str(cpus_per_node), "CLUSTER_GPUS": str(gpus_per_node),
                "CLUSTER_OBJECT_STORE_BYTES": str(object_store_mb * 1024 * 1024), "CLUSTER_TMP": tmp,
                "PYTHONPATH": python_path, **{f"NODE_SETUP_{index}": commands
                                              for index, commands in (node_setup or {}).items()}}
    # One cluster at a time on this machine, whichever test process asks (a cluster is about 1 GB and
    # keeps both cores busy; two at once would slow each other's timed accidents).
    lock = open(Path(tempfile.gettempdir()) / "cxrbench-loopback-cluster.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        # --kill-child: if this process is killed (the timeout), the namespace's PID 1 goes too, and with it all.
        # The daemons at CLUSTER_NICENESS (root, as unshare needs), their actors at 0 (WORKER_PRIORITY).
        done = subprocess.run(["nice", "-n", str(CLUSTER_NICENESS),
                               "unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc",
                               "bash", "-c", _WRAPPER, "loopback-ray-cluster", str(script), *map(str, args)],
                              env=full_env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    finally:
        lock.close()  # releases it
        shutil.rmtree(tmp, ignore_errors=True)
    if done.returncode == START_FAILED and "loopback Ray cluster:" in done.stderr:
        raise LoopbackClusterError(done.stderr)
    return done


def raylet_pids() -> dict[str, int]:
    """Each node's raylet process: node id (hex, as `ray.nodes()` gives "NodeID") -> pid.

    For a script run by run_in_loopback_cluster, which kills one (os.kill(pid, SIGKILL)) to lose a node:
    inside the namespace /proc holds the cluster's processes only, so every raylet found is one of its
    nodes. Each raylet names its node on its command line (--node_id=HEX).
    """
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone since the listing
            continue
        if argv[0].endswith(b"/raylet"):
            for arg in argv:
                if arg.startswith(b"--node_id="):
                    found[arg.removeprefix(b"--node_id=").decode()] = int(entry.name)
    return found


def listening_addresses() -> set[str]:
    """The addresses of this network namespace's listening TCP sockets (IPv4 and IPv6), from /proc/net:
    what a script in the cluster checks to see that Ray bound only the node address it was given."""
    found = set()
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state != "0A":  # TCP_LISTEN
                continue
            # The kernel prints each 32-bit word of the address in host (little-endian) byte order.
            words = bytes.fromhex(local.split(":")[0])
            raw = b"".join(words[i:i + 4][::-1] for i in range(0, width, 4))
            address = ipaddress.ip_address(raw)
            found.add(str(getattr(address, "ipv4_mapped", None) or address))  # ::ffff:127.0.0.1 is 127.0.0.1
    return found
