"""`bin/gpu-check`: the PyTorch worker through the harness against a bare PyTorch loop, on one GPU, in minutes.

Steps, each a subprocess, so this module needs the standard library alone and imports no framework:
1. the interpreters and the GPU (harness.gpu_check.machine);
2. `harness benchmark` of the PyTorch worker in that interpreter (local runtime, `--python`, so
   nothing is built or downloaded): ResNet-50, 1 epoch, one seed;
3. benchmarks/bare_pytorch.py in the same interpreter, with the threads and determinism the worker
   reported;
4. `harness parity` of every GPU worker that interpreter can run (TensorFlow, Keras), when there are two;
5. the summary (harness.gpu_check.results), also saved as summary.json; exit 1 when a rule fails.

Exit status: 0 passed, 1 a rule failed (or a step did), 2 the machine or the arguments cannot run the check.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from harness.gpu_check.machine import ROOT, CheckRefused, check_machine, harness_environment
from harness.gpu_check.results import (
    MIN_RATIO,
    CheckResults,
    ParityPair,
    combine,
    problems,
    read_harness_run,
    read_parity,
    summary_lines,
)

PRECISIONS = ("fp32", "bf16-mixed", "fp16-mixed")
# Sized for one modern GPU in well under 8 minutes, the first run included (drawing the phantom at
# 224 px, about 6 ms an image on one core, is cached for the next): 3,000 patients are about 8,000
# images, 70% of them trained on, so about 43 steps of 128 in the one epoch; the bare loop times as many.
DEFAULTS = {"image_size": 224, "batch_size": 128, "patients": 3000, "warmup": 10, "steps": 40}


def parse_arguments(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The check's options, and the arguments after `--` (passed on to `harness benchmark`)."""
    extra: list[str] = []
    if "--" in argv:
        argv, extra = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    parser = argparse.ArgumentParser(
        prog="gpu-check", description="The PyTorch worker through the harness against a bare PyTorch loop on one "
        "GPU: img/s and their ratio, GPU memory, energy, the harness's ceiling, parity of every GPU worker "
        "present. Exit 1 when the ratio is under --min-ratio or parity fails. Arguments after `--` go to "
        "`harness benchmark`.")
    parser.add_argument("--python", default="python3", metavar="PATH",
                        help="the interpreter with torch (and any of tensorflow, keras): the workers and the bare "
                             "loop run in it, nothing is installed (default: python3)")
    parser.add_argument("--harness-python", metavar="PATH", default=os.environ.get("CXRBENCH_HARNESS_PYTHON"),
                        help="the interpreter with the harness's packages (default: $CXRBENCH_HARNESS_PYTHON, else "
                             ".venv, which bin/bootstrap.sh makes on first use, from the network)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cuda (default); cpu: a dry run of the same steps without a GPU (for tests)")
    parser.add_argument("--precision", choices=PRECISIONS, default="bf16-mixed")
    parser.add_argument("--image-size", type=int, default=DEFAULTS["image_size"])
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--patients", type=int, default=DEFAULTS["patients"],
                        help=f"phantom patients (default {DEFAULTS['patients']}: about 2.7 images each)")
    parser.add_argument("--warmup", type=int, default=DEFAULTS["warmup"], help="bare loop: untimed steps first")
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="bare loop: timed steps")
    parser.add_argument("--min-ratio", type=float, default=MIN_RATIO,
                        help=f"fail when harness img/s over bare img/s is below this (default {MIN_RATIO})")
    parser.add_argument("--out", type=Path, default=Path("results/gpu-check"),
                        help="each check writes a folder here (default results/gpu-check)")
    args = parser.parse_args(argv)
    for flag, value, low in (("--image-size", args.image_size, 32), ("--batch-size", args.batch_size, 2),
                             ("--patients", args.patients, 10), ("--warmup", args.warmup, 0),
                             ("--steps", args.steps, 1)):
        if value < low:
            parser.error(f"{flag}: {value} must be at least {low}")
    if not 0 <= args.min_ratio <= 10:
        parser.error(f"--min-ratio: {args.min_ratio} must be between 0 and 10")
    return args, extra


def _step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def new_folder(out: Path) -> Path:
    """A fresh folder for this check's files under `out`, named by the time."""
    stem = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(100):
        folder = out / (stem if attempt == 0 else f"{stem}-{attempt}")
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue
    raise CheckRefused(f"--out: could not make a new folder under {out}")


def _shared(args: argparse.Namespace, machine: dict, workers: list[str]) -> list[str]:
    """The options `benchmark` and `parity` share: workers, interpreters, device, precision, data."""
    chosen = ["--workers", ",".join(workers)]
    for worker in workers:
        chosen += ["--python", f"{worker}={machine['python']}"]
    return chosen + ["--device", args.device, "--precision", args.precision, "--image-size", str(args.image_size),
                     "--patients", str(args.patients)]


def run_harness(args: argparse.Namespace, machine: dict, folder: Path, extra: list[str]) -> Path:
    """`harness benchmark` of the PyTorch worker; its run directory. RuntimeError when it fails."""
    command = [machine["harness_python"], "-m", "harness.cli", "benchmark", *_shared(args, machine, ["pytorch"]),
               "--batch-size", str(args.batch_size), "--epochs", "1", "--seeds", "0", "--bootstrap", "0",
               "--out", str(folder / "benchmark"), *extra]
    print(" ".join(command), flush=True)
    status = subprocess.run(command, env=harness_environment()).returncode
    runs = sorted((folder / "benchmark").glob("*/run.json"))
    if status != 0 or not runs:
        raise RuntimeError(f"`harness benchmark` failed (exit {status}); its run folder: "
                           f"{runs[-1].parent if runs else 'none'}")
    return runs[-1].parent


def run_bare(args: argparse.Namespace, machine: dict, threads: object, deterministic: bool) -> dict:
    """benchmarks/bare_pytorch.py in the torch interpreter; its JSON line. RuntimeError when it fails."""
    command = [machine["python"], str(ROOT / "benchmarks" / "bare_pytorch.py"), "--device", args.device,
               "--precision", args.precision, "--image-size", str(args.image_size), "--batch-size",
               str(args.batch_size), "--warmup", str(args.warmup), "--steps", str(args.steps)]
    if isinstance(threads, int) and threads > 0:
        command += ["--threads", str(threads)]
    if deterministic:
        command.append("--deterministic")
    print(" ".join(command), flush=True)
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the bare loop failed (exit {done.returncode})")
    return json.loads(lines[-1])


def run_parity(args: argparse.Namespace, machine: dict, folder: Path) -> tuple[tuple[str, ...], tuple[ParityPair, ...],
                                                                              str | None]:
    """`harness parity` of every GPU worker found: (workers, pairs, why it was not judged or None)."""
    path = folder / "parity.json"
    command = [machine["harness_python"], "-m", "harness.cli", "parity", *_shared(args, machine, machine["workers"]),
               "--json", str(path)]
    print(" ".join(command), flush=True)
    status = subprocess.run(command, env=harness_environment()).returncode
    if status not in (0, 1) or not path.is_file():
        return tuple(machine["workers"]), (), f"`harness parity` exited {status} without a verdict (see above)"
    workers, pairs = read_parity(path)
    return workers, pairs, None


def run_check(args: argparse.Namespace, machine: dict, extra: list[str]) -> tuple[CheckResults | None, Path]:
    """Steps 2 to 4; the results (None when a step failed, after saying why) and the check's folder."""
    folder = new_folder(args.out)
    _step(f"PyTorch worker through the harness ({args.precision}, {args.image_size} px, batch {args.batch_size})")
    try:
        run_dir = run_harness(args, machine, folder, extra)
        harness = read_harness_run(run_dir)
        deterministic = harness["numerics"].get("deterministic_algorithms") == "true"
        _step("bare PyTorch loop, same interpreter, same model, batch and numerics")
        bare = run_bare(args, machine, harness["threads"], deterministic)
        (folder / "bare.json").write_text(json.dumps(bare, indent=2) + "\n")
    except (RuntimeError, ValueError) as error:
        print(f"gpu-check: {error}", file=sys.stderr)
        return None, folder
    parity: tuple = ((), (), None)
    if len(machine["workers"]) > 1:
        _step(f"parity of {', '.join(machine['workers'])}")
        parity = run_parity(args, machine, folder)
    return combine(harness, bare, *parity), folder


def main(argv: list[str] | None = None) -> int:
    """Entry point of bin/gpu-check; the exit status."""
    args, extra = parse_arguments(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    _step("interpreters and GPU")
    try:
        machine = check_machine(args)
    except CheckRefused as error:
        print(f"gpu-check: {error}", file=sys.stderr)
        return 2
    torch = machine["torch"]
    print(f"torch {torch['torch']} (CUDA {torch['built_for_cuda']}) in {machine['python']}, "
          f"on {torch['gpu'] or 'the CPU'}; workers it can run: {', '.join(machine['workers'])}")
    if machine.get("nvidia_smi"):
        print(f"nvidia-smi: {machine['nvidia_smi']}")
    for note in machine["notes"]:
        print(f"note: {note}")
    results, folder = run_check(args, machine, extra)
    if results is None:
        print(f"gpu-check: FAIL (a step failed; its files are in {folder})", file=sys.stderr)
        return 1
    found = problems(results, args.device, args.min_ratio)
    _step(f"summary ({time.perf_counter() - started:.0f} s; files in {folder})")
    print("\n".join(summary_lines(results, found, args.min_ratio)))
    for problem in found:
        print(f"gpu-check: {problem}", file=sys.stderr)
    summary = {**results.to_dict(), "problems": found, "passed": not found, "device_asked": args.device,
               "precision": args.precision, "image_size": args.image_size, "batch_size": args.batch_size,
               "patients": args.patients, "min_ratio": args.min_ratio, "python": machine["python"],
               "torch": torch, "nvidia_smi": machine.get("nvidia_smi", ""), "seconds": time.perf_counter() - started}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if found else 0
