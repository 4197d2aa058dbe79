"""A real MLflow model registry filled by a real benchmark, for the registry, predict and page tests.

`null_registry` runs `harness benchmark --workers null --register` (seconds); `framework_registry` does
the same with framework workers, trained briefly (minutes: the framework tests and the browser test share
one per test session, under a file lock, like conftest's `cpu_null_run`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import made_once, run_harness

# Small and fast: the phantom at 48 px (the feature maps are 2 x 2, enough for a map on the page).
REGISTRY_RUN = ["--patients", "60", "--image-size", "48", "--batch-size", "8", "--localize", "off"]


def registered_run(folder: Path, workers: str, epochs: int = 1, seeds: str = "0",
                   python: str | None = None) -> tuple[str, Path]:
    """Run a benchmark with --register into `folder`; returns (registry URI, run directory).

    The first version of each worker's model gets the alias `champion` (`harness models alias`).
    """
    results = folder / "results"
    args = ["benchmark", "--workers", workers, "--epochs", str(epochs), "--seeds", seeds, *REGISTRY_RUN,
            "--out", str(results), "--register"]
    if python:
        args += ["--python", python]
    done = run_harness(args, cwd=folder, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    uri = f"sqlite:///{(results / 'mlflow.db').resolve()}"
    run_dir = next(path for path in results.iterdir() if (path / "run.json").is_file())
    for line in done.stdout.splitlines():
        if line.startswith("registered ") and line.split()[3] == "1":
            aliased = run_harness(["models", "alias", f"{line.split()[1]}/1", "champion", "--registry", uri],
                                  cwd=folder)
            assert aliased.returncode == 0, aliased.stderr
    return uri, run_dir


def null_registry(folder: Path) -> tuple[str, list[str]]:
    """A registry holding the null worker's model of a two-epoch benchmark: (URI, [its reference])."""
    uri, _ = registered_run(folder, "null", epochs=2, python=f"null={sys.executable}")
    return uri, ["cxrbench-resnet50-null@champion"]


def shared_framework_registry(base: Path, workers: str = "pytorch,tensorflow,keras") -> tuple[str, Path]:
    """One registry of briefly trained framework models per test session, shared by every xdist process."""
    def make(shared: Path) -> dict:
        uri, run_dir = registered_run(shared, workers)
        return {"uri": uri, "run_dir": str(run_dir)}

    _, made = made_once(base, "framework_registry", make)
    return made["uri"], Path(made["run_dir"])
