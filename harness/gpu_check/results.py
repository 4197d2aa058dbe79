"""What `bin/gpu-check` found: read from the files its steps wrote, judged, and put into words.

Pure reading and arithmetic on JSON, so the pass/fail rules are tested with faked results:
the harness's run directory (run.json, metrics.json), the bare loop's JSON line
(benchmarks/bare_pytorch.py) and `harness parity --json`'s summary.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

MIN_RATIO = 0.9  # the harness may cost the PyTorch worker at most 10% of bare PyTorch's throughput
HARNESS_BOUND = 0.8  # as the efficiency table: a worker within 80% of the ceiling waits for the harness
WORKER = "pytorch"


@dataclass(frozen=True)
class ParityPair:
    """One pair of workers in `harness parity`'s summary."""

    workers: tuple[str, str]
    passed: bool


@dataclass(frozen=True)
class CheckResults:
    """The figures the check prints and judges (None: not recorded)."""

    device: str  # as the PyTorch worker reported it
    harness_images_per_second: float | None
    bare_images_per_second: float | None
    harness_peak_bytes: int | None
    bare_peak_bytes: int | None
    joules_per_epoch: float | None
    joules_per_image: float | None
    ceiling_images_per_second: float | None
    parity_workers: tuple[str, ...] = ()  # the workers `harness parity` compared; () when it did not run
    parity_pairs: tuple[ParityPair, ...] = ()
    parity_error: str | None = None  # why parity could not be judged (it ran and wrote nothing, say)
    numerics: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """Harness throughput over bare throughput."""
        if not self.harness_images_per_second or not self.bare_images_per_second:
            return None
        return self.harness_images_per_second / self.bare_images_per_second

    def to_dict(self) -> dict:
        """Plain JSON-ready values, the ratio included."""
        return {**asdict(self), "ratio": self.ratio}


def _median(values: list) -> float | None:
    finite = [value for value in values if isinstance(value, (int, float)) and math.isfinite(value)]
    return float(statistics.median(finite)) if finite else None


def read_harness_run(run_dir: Path, worker: str = WORKER) -> dict:
    """The worker's figures from a finished run directory; ValueError naming the file and field missing."""
    record = json.loads((run_dir / "run.json").read_text())
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise ValueError(f"{metrics_path}: missing (the run did not finish its first epoch)")
    workers = json.loads(metrics_path.read_text()).get("workers", {})
    if worker not in workers or not workers[worker].get("runs"):
        raise ValueError(f"{metrics_path}: no runs of worker '{worker}' under 'workers'")
    run = workers[worker]["runs"][0]
    energy = run.get("energy") or {}
    memory = run.get("memory") or {}
    reported = record.get("workers", {}).get(worker, {}).get("reported", {})
    ceiling = record.get("harness_ceiling") or {}
    return {
        "device": str(reported.get("device", "not reported")),
        "threads": reported.get("threads"),
        "numerics": dict(reported.get("numerics", {})),
        "images_per_second": _median(run["timings"]["train_images_per_second"]),
        "device_peak_bytes": memory.get("device_peak_bytes") if memory.get("device_memory_reported", True) else None,
        "joules_per_epoch": _median(energy.get("joules_per_epoch") or []),
        "joules_per_image": energy.get("joules_per_image"),
        "ceiling_images_per_second": ceiling.get("images_per_second"),
    }


def read_parity(path: Path) -> tuple[tuple[str, ...], tuple[ParityPair, ...]]:
    """The workers and pairs of a `harness parity --json` summary."""
    summary = json.loads(path.read_text())
    workers = tuple(row["worker"] for row in summary.get("counts", []))
    pairs = tuple(ParityPair((row["workers"][0], row["workers"][1]), bool(row["ok"])) for row in summary["pairs"])
    return workers, pairs


def combine(harness: dict, bare: dict, parity_workers: tuple[str, ...] = (),
            parity_pairs: tuple[ParityPair, ...] = (), parity_error: str | None = None) -> CheckResults:
    """One CheckResults from read_harness_run's figures, the bare loop's JSON and parity's pairs."""
    return CheckResults(
        device=harness["device"],
        harness_images_per_second=harness["images_per_second"],
        bare_images_per_second=bare.get("images_per_second"),
        harness_peak_bytes=harness["device_peak_bytes"],
        bare_peak_bytes=bare.get("device_peak_bytes"),
        joules_per_epoch=harness["joules_per_epoch"],
        joules_per_image=harness["joules_per_image"],
        ceiling_images_per_second=harness["ceiling_images_per_second"],
        parity_workers=parity_workers,
        parity_pairs=parity_pairs,
        parity_error=parity_error,
        numerics=harness["numerics"],
    )


def problems(results: CheckResults, device: str, min_ratio: float = MIN_RATIO) -> list[str]:
    """Why the check fails, one sentence each; empty when it passes."""
    found = []
    if device == "cuda" and not results.device.lower().startswith("cuda"):
        found.append(f"the PyTorch worker ran on '{results.device}', not on a CUDA device: read its log "
                     "(workers/pytorch.log in the run directory)")
    if results.harness_images_per_second is None:
        found.append("the harness recorded no steady-state throughput (an epoch needs at least 2 batches: "
                     "more --patients or a smaller --batch-size)")
    if results.bare_images_per_second is None:
        found.append("the bare loop reported no throughput")
    ratio = results.ratio
    if ratio is not None and ratio < min_ratio:
        found.append(f"the PyTorch worker through the harness ran at {ratio:.3f} of bare PyTorch's throughput, "
                     f"under the {min_ratio:g} required")
    for pair in results.parity_pairs:
        if not pair.passed:
            found.append(f"parity of {pair.workers[0]} and {pair.workers[1]} failed: see the parity tables above")
    if results.parity_error:
        found.append(f"parity: {results.parity_error}")
    return found


def _rate(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f} img/s" if value >= 100 else f"{value:.1f} img/s"  # a CPU dry run is slow


def _gib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**30:.2f} GiB"


def summary_lines(results: CheckResults, found: list[str], min_ratio: float = MIN_RATIO) -> list[str]:
    """The check's report, one 'name: value' line each, ending with PASS or FAIL."""
    ratio = results.ratio
    if results.joules_per_epoch is None and results.joules_per_image is None:
        energy = "n/a (no readable energy counter)"
    else:
        per_epoch = "n/a" if results.joules_per_epoch is None else f"{results.joules_per_epoch:,.0f} J/epoch"
        per_image = "n/a" if results.joules_per_image is None else f"{results.joules_per_image:.4f} J/img"
        energy = f"{per_epoch}, {per_image}"
    ceiling = _rate(results.ceiling_images_per_second)
    if results.ceiling_images_per_second and results.harness_images_per_second:
        share = results.harness_images_per_second / results.ceiling_images_per_second
        ceiling += f" (the worker at {share:.0%} of it{': harness-bound' if share >= HARNESS_BOUND else ''})"
    elif results.ceiling_images_per_second is None:
        ceiling += " (not recorded in run.json)"
    lines = [
        f"device:             {results.device}",
        f"harness img/s:      {_rate(results.harness_images_per_second)} (PyTorch worker through the harness)",
        f"bare img/s:         {_rate(results.bare_images_per_second)} (bare PyTorch loop, same interpreter)",
        f"ratio:              {'n/a' if ratio is None else f'{ratio:.3f}'} (pass: at least {min_ratio:g})",
        f"GPU memory peak:    {_gib(results.harness_peak_bytes)} harness worker, {_gib(results.bare_peak_bytes)} bare",
        f"energy:             {energy}",
        f"harness ceiling:    {ceiling}",
    ]
    if results.parity_pairs:
        lines += [f"parity:             {a} / {b}: {'passed' if pair.passed else 'FAILED'}"
                  for pair in results.parity_pairs for a, b in [pair.workers]]
    elif results.parity_error:
        lines.append(f"parity:             not judged: {results.parity_error}")
    else:
        lines.append("parity:             no pair (PyTorch is the only GPU worker this Python can run)")
    lines.append(f"result:             {'PASS' if not found else 'FAIL'}")
    return lines
