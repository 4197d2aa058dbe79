"""The machine `bin/gpu-check` runs on: the GPU, the interpreter with torch and what else it can run, the harness's.

Each question is asked in a subprocess of the interpreter concerned, so the check imports no framework.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Where the harness's own packages live in a checkout: an interpreter with the harness's dependencies
# but without `pip install -e .` (CXRBENCH_HARNESS_PYTHON) imports them from here.
SOURCE_PATHS = (ROOT, ROOT / "proto", ROOT / "workers" / "common")

# Asked in the user's interpreter, by a script outside the harness (which imports no framework).
PROBE = ROOT / "benchmarks" / "gpu_machine_probe.py"


class CheckRefused(Exception):
    """The machine or the arguments cannot run the check (exit status 2)."""


def _interpreter(flag: str, given: str) -> str:
    found = shutil.which(given)
    if found is None:
        raise CheckRefused(f"{flag}: {given}: no such interpreter")
    return os.path.abspath(found)  # not resolved: a virtual environment's python is a link that must stay one


def _probe(python: str, *question: str) -> dict:
    """Ask `python` the probe's `question`; its last stdout line is JSON. CheckRefused with its error output
    otherwise."""
    done = subprocess.run([python, str(PROBE), *question], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if done.returncode != 0:
        raise CheckRefused(f"--python {python}: {(done.stderr.strip().splitlines() or ['failed'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def gpu_workers(python: str, device: str) -> tuple[list[str], list[str]]:
    """The workers `python` can run on `device` (pytorch first), and a note on each framework left out."""
    found = _probe(python, "frameworks", device)
    workers, notes = ["pytorch"], []
    if "tensorflow" in found and device == "cuda" and not found["gpus"]:
        notes.append(f"tensorflow {found['tensorflow']} sees no GPU (a CPU build?): TensorFlow and Keras left out")
    elif "tensorflow" in found:
        workers.append("tensorflow")
        if "keras" in found and not found["keras"].startswith("3."):
            notes.append(f"keras {found['keras']}: the worker needs Keras 3; left out")
        elif "keras" in found:
            workers.append("keras")
    elif "keras" in found:
        notes.append("keras without tensorflow (its backend here): left out")
    if "jax" in found:
        missing = [package for package in ("flax", "optax") if package not in found]
        if missing:
            notes.append(f"jax {found['jax']} without {' and '.join(missing)}: the JAX worker left out")
        elif device == "cuda" and not found["jax_gpus"]:
            notes.append(f"jax {found['jax']} sees no GPU (jaxlib without its CUDA plugin?): the JAX worker left out")
        else:
            workers.append("jax")
    return workers, notes


def check_machine(args: argparse.Namespace) -> dict:
    """The interpreters and the GPU, before anything runs; CheckRefused saying what is missing."""
    python = _interpreter("--python", args.python)
    harness_python = _interpreter("--harness-python", args.harness_python or sys.executable)
    if args.device == "cuda" and shutil.which("nvidia-smi") is None:
        raise CheckRefused("no NVIDIA GPU: nvidia-smi is not on PATH (the driver is missing). This check needs "
                           "one; `--device cpu` runs its steps on the CPU as a dry run")
    nvidia_smi = ""
    if args.device == "cuda":  # what the driver says, printed for the record (name, driver, memory, power limit)
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,power.limit", "--format=csv,noheader"]
        done = subprocess.run(query, capture_output=True, text=True)
        nvidia_smi = done.stdout.strip() if done.returncode == 0 else f"nvidia-smi failed: {done.stderr.strip()}"
    torch = _probe(python, "torch")
    if args.device == "cuda" and not torch["cuda"]:
        raise CheckRefused(f"--python {python}: torch {torch['torch']} (built for CUDA {torch['built_for_cuda']}) "
                           "sees no CUDA device: a CPU build of torch, or a driver older than its CUDA needs "
                           "(nvidia-smi says which CUDA the driver supports)")
    done = subprocess.run([harness_python, "-c", "import harness.benchmark"], capture_output=True, text=True,
                          env=harness_environment())
    if done.returncode != 0:
        raise CheckRefused(f"--harness-python {harness_python}: cannot import the harness: "
                           f"{(done.stderr.strip().splitlines() or ['failed'])[-1]} (it needs pyproject.toml's "
                           "dependencies; bin/bootstrap.sh installs them into .venv)")
    workers, notes = gpu_workers(python, args.device)
    return {"python": python, "harness_python": harness_python, "torch": torch, "workers": workers, "notes": notes,
            "nvidia_smi": nvidia_smi}


def harness_environment() -> dict[str, str]:
    """This environment with the checkout's source folders first on PYTHONPATH."""
    paths = [str(path) for path in SOURCE_PATHS] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
