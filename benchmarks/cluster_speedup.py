"""Cluster benchmark: what `--runtime ray` gains by running a study's runs side by side, and what it costs each run.

The study: the null worker and two copies of it (null, null_b, null_c; tests/null_copies.py) x seeds 0,1 x
2 folds = 12 runs of 2 epochs each, at the tests' small config (tests/conftest.py SMALL_RUN), on the
two-node Ray cluster on loopback (tests/ray_cluster.py: 2 nodes, 2 fake GPUs and 2 CPUs each, in a
private network namespace; needs root).

(a) Speed-up. Each null train step sleeps CXRBENCH_NULL_STEP_SECONDS = 0.1 s, so a run lasts a few
    seconds, most of it waiting, as a GPU-bound run would. From run.json's executions (each run's
    "started" and "finished": its worker's start to the end of its evaluation) it prints the execution
    phase's wall time (first start to last finish) against the sum of the runs' durations (what one
    GPU would take, run after run), their ratio (the speed-up) and the ideal (4 GPUs: 4x); and the
    harness's whole wall time (preflight, parity probe, ceiling, report; not the cluster's start).
(b) The per-run path. With CXRBENCH_NULL_STEP_SECONDS = 0 the null worker computes nothing, so its
    training throughput (metrics.json runs[].timings.train_images_per_second, per epoch) is the speed
    of the harness's data path into a worker. The same study runs under the local runtime (one run after
    another), through Ray on the 4 GPUs (runs side by side), and through Ray on 1 node with 1 GPU (one
    run at a time, so Ray's path alone is compared with the local one, without the contention of
    several runs). Per run it prints that throughput (median over epochs) and the run's overhead: its
    duration minus its training seconds (worker start, Configure, SetWeights, evaluation); then the
    medians over runs and epochs and the ratios to the local runtime. At this small config an epoch
    is about 9 steps of 8 images of 32x32, a few milliseconds when nothing sleeps, so the img/s figures
    swing with the machine's scheduling; the overheads (seconds) are the steadier figures.

On the 2-core development machine the 4 fake GPUs share 2 CPU cores: with sleeping steps the runs
overlap freely, but every worker start, batch build and evaluation competes for the 2 cores, so the
speed-up is bounded by the cores, not by the GPUs; and in (b) runs side by side slow each other down.

    .venv/bin/python benchmarks/cluster_speedup.py

(Run as `cluster_speedup.py --inside RESULT -- HARNESS ARGS` by itself inside the cluster: it times
the harness there and hands the figure back in the file RESULT, as Ray writes to a driver's stdout.)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from conftest import SMALL_RUN  # noqa: E402  (tests/ holds the small config and the cluster helpers)
from null_copies import null_copies  # noqa: E402
from ray_cluster import run_in_loopback_cluster  # noqa: E402

WORKERS = ["null", "null_b", "null_c"]
# One thread per worker: they compute on the CPU beside fake GPUs, within the one CPU each run reserves.
STUDY = ["--workers", ",".join(WORKERS), "--epochs", "2", *SMALL_RUN, "--seeds", "0,1", "--folds", "2",
         "--bootstrap", "0", "--deterministic", "--threads", "1"]
STEP_SECONDS = 0.1  # part (a): each null train step sleeps this long
GPUS = 4  # part (a)'s cluster: 2 nodes x 2 fake GPUs


@dataclass
class Study:
    """One finished study: its run directory and the harness's wall time."""

    name: str
    run: Path
    harness_seconds: float

    def executions(self) -> dict[str, dict]:
        runs = json.loads((self.run / "run.json").read_text())["runs"]
        return {key: entry["execution"] for key, entry in runs.items()}

    def timings(self) -> dict[str, dict]:
        """Run key ("null_b/seed1/fold2") -> its metrics.json timings."""
        found = {}
        for worker, result in json.loads((self.run / "metrics.json").read_text())["workers"].items():
            for entry in result["runs"]:
                found[f"{worker}/seed{entry['seed']}/fold{entry['fold']}"] = entry["timings"]
        return found

    def per_run(self) -> dict[str, tuple[list[float], float]]:
        """Run key -> (its epochs' train images per second, its overhead in seconds)."""
        executions, timings = self.executions(), self.timings()
        assert set(executions) == set(timings), (sorted(executions), sorted(timings))
        result = {}
        for key, execution in executions.items():
            speeds = [speed for speed in timings[key]["train_images_per_second"] if speed is not None]
            overhead = execution["finished"] - execution["started"] - sum(timings[key]["epoch_seconds"])
            result[key] = (speeds, overhead)
        return result


def only_run(out: Path) -> Path:
    (run,) = [path for path in out.iterdir() if (path / "run.json").exists()]
    return run


def inside(result: Path, harness_args: list[str]) -> int:
    """In the cluster: run the harness, write its exit status, output tail and wall time to `result`."""
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "harness.cli", *harness_args], capture_output=True, text=True)
    result.write_text(json.dumps({"returncode": done.returncode, "seconds": time.monotonic() - began,
                                  "stderr": done.stderr[-3000:]}))
    return 0


def ray_study(name: str, folder: Path, environment: dict[str, str], **cluster) -> Study:
    out, result = folder / "results", folder / "harness.json"
    folder.mkdir(parents=True)
    done = run_in_loopback_cluster(Path(__file__), ["--inside", str(result), "--", "benchmark", "--runtime", "ray",
                                                    *STUDY, "--out", str(out)],
                                   env=environment, cwd=folder, timeout=900, **cluster)
    if done.returncode != 0 or not result.exists():
        raise SystemExit(f"{name}: the cluster script failed ({done.returncode}): {done.stderr[-3000:]}")
    harness = json.loads(result.read_text())
    if harness["returncode"] != 0:
        raise SystemExit(f"{name}: the harness failed ({harness['returncode']}): {harness['stderr']}")
    return Study(name, only_run(out), harness["seconds"])


def local_study(name: str, folder: Path, environment: dict[str, str]) -> Study:
    out = folder / "results"
    folder.mkdir(parents=True)
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "harness.cli", "benchmark", *STUDY, "--out", str(out)],
                          cwd=folder, env={**os.environ, **environment}, capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f"{name}: the harness failed ({done.returncode}): {done.stderr[-3000:]}")
    return Study(name, only_run(out), seconds)


def speed_up(study: Study) -> None:
    executions = study.executions()
    durations = [entry["finished"] - entry["started"] for entry in executions.values()]
    wall = max(e["finished"] for e in executions.values()) - min(e["started"] for e in executions.values())
    moments = sorted(entry["started"] for entry in executions.values())
    busiest = max(sum(e["started"] <= moment < e["finished"] for e in executions.values()) for moment in moments)
    nodes = {entry.get("node_id") for entry in executions.values()}
    print(f"(a) speed-up: {len(executions)} runs on {len(nodes)} nodes, {GPUS} fake GPUs, 2 CPU cores in all; "
          f"null steps sleep {STEP_SECONDS} s")
    rows = [("runs' durations, summed (one GPU, run after run)", f"{sum(durations):8.1f} s"),
            ("execution phase, first start to last finish", f"{wall:8.1f} s"),
            ("speed-up (sum / execution phase)", f"{sum(durations) / wall:8.2f} x"),
            (f"ideal ({GPUS} GPUs)", f"{GPUS:8.2f} x"),
            ("most runs at once", f"{busiest:8d}"),
            ("a run's duration: median (min-max)",
             f"{statistics.median(durations):8.1f} s ({min(durations):.1f}-{max(durations):.1f})"),
            ("harness wall time (whole study, cluster start not counted)", f"{study.harness_seconds:8.1f} s")]
    for label, value in rows:
        print(f"  {label:<60} {value}")


def data_path(studies: list[Study]) -> None:
    per_run = {study.name: study.per_run() for study in studies}
    keys = list(per_run[studies[0].name])
    print("\n(b) the per-run path, null steps do not sleep: training img/s (median of the run's epochs) "
          "and overhead s (duration - training)")
    header = f"  {'run':<20}" + "".join(f" {study.name + ' img/s':>22} {'overhead':>9}" for study in studies)
    print(header)
    for key in keys:
        cells = "".join(f" {statistics.median(per_run[s.name][key][0]):22.0f} {per_run[s.name][key][1]:9.2f}"
                        for s in studies)
        print(f"  {key:<20}{cells}")
    reference = studies[0]
    base_speed = statistics.median(v for speeds, _ in per_run[reference.name].values() for v in speeds)
    base_overhead = statistics.median(overhead for _, overhead in per_run[reference.name].values())
    print(f"\n  {'':<27} {'img/s, median':>14} {'/ local':>8} {'overhead, median':>17} {'/ local':>8}"
          f" {'runs, summed':>13} {'execution':>10} {'harness wall':>13}")
    for study in studies:
        speed = statistics.median(v for speeds, _ in per_run[study.name].values() for v in speeds)
        overhead = statistics.median(overhead for _, overhead in per_run[study.name].values())
        executions = study.executions().values()
        summed = sum(e["finished"] - e["started"] for e in executions)
        wall = max(e["finished"] for e in executions) - min(e["started"] for e in executions)
        print(f"  {study.name + ' (' + DESCRIPTIONS[study.name] + ')':<27} {speed:14.0f} {speed / base_speed:8.2f} "
              f"{overhead:15.2f} s {overhead / base_overhead:8.2f} {summed:11.1f} s {wall:8.1f} s "
              f"{study.harness_seconds:11.1f} s")
    print("  (runs, summed: the runs' durations added up; execution: first run's start to last run's finish; run in "
          "turn, the difference is the time between runs: under Ray, each run's actor starting)")


DESCRIPTIONS = {"local": "in turn", "ray 4 GPUs": "side by side", "ray 1 GPU": "in turn"}


def main() -> int:
    if sys.argv[1:2] == ["--inside"]:
        return inside(Path(sys.argv[2]), sys.argv[4:])
    with tempfile.TemporaryDirectory(prefix="cluster-speedup-") as tmp:
        folder = Path(tmp)
        extra = null_copies(folder / "workers", WORKERS[1:])
        print(f"study: workers {','.join(WORKERS)} x seeds 0,1 x 2 folds = 12 runs, 2 epochs, "
              f"{' '.join(SMALL_RUN[:-2])} (tests/conftest.py SMALL_RUN)\n")
        began = time.monotonic()
        speed_up(ray_study("ray 4 GPUs", folder / "a", {**extra, "CXRBENCH_NULL_STEP_SECONDS": str(STEP_SECONDS)}))
        bare = {**extra, "CXRBENCH_NULL_STEP_SECONDS": "0"}
        studies = [local_study("local", folder / "b-local", bare),
                   ray_study("ray 4 GPUs", folder / "b-ray4", bare),
                   ray_study("ray 1 GPU", folder / "b-ray1", bare, nodes=1, gpus_per_node=1)]
        data_path(studies)
        print(f"\n(this benchmark: {time.monotonic() - began:.0f} s, 3 loopback clusters started and stopped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
