"""A PyTorch run through `--runtime ray` computes what the same run computes under the local runtime.

The same deterministic CPU run (one worker, one seed, one epoch, the small config) once with the local
runtime and once as a Ray actor on the two-node loopback cluster (tests/ray_cluster.py): every logit
file byte for byte and the kept checkpoint's digest must agree. Anything the actor changes for its
worker (thread variables Ray sets, another CPU affinity, another device) would show here as other bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT, SMALL_RUN, run_harness
from ray_cluster import run_in_loopback_cluster

pytestmark = [pytest.mark.framework, pytest.mark.cluster]

# Two threads, this machine's cores: what the worker uses unless told, and all a run reserves on a node here.
RUN = ["--workers", "pytorch", "--epochs", "1", *SMALL_RUN, "--deterministic", "--bootstrap", "0", "--threads", "2"]


def only_run(out: Path) -> Path:
    (run,) = [path for path in out.iterdir() if (path / "run.json").exists()]
    return run


def logit_files(run: Path) -> dict[str, np.ndarray]:
    """logits/<worker>/.../<name>.npy relative path -> its array."""
    return {path.relative_to(run / "logits").as_posix(): np.load(path)
            for path in sorted((run / "logits").rglob("*.npy"))}


def test_a_pytorch_cpu_run_through_ray_gives_the_local_runtimes_logits_byte_for_byte(tmp_path):
    local = run_harness(["benchmark", *RUN, "--out", str(tmp_path / "local")], REPO_ROOT)
    assert local.returncode == 0, local.stderr[-3000:]
    on_ray = run_in_loopback_cluster("-m", ["harness.cli", "benchmark", "--runtime", "ray", *RUN, "--cpus-per-run", "2",
                                            "--out", str(tmp_path / "ray")], cwd=REPO_ROOT, timeout=540)
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    local_run, ray_run = only_run(tmp_path / "local"), only_run(tmp_path / "ray")

    record = json.loads((ray_run / "run.json").read_text())
    assert record["study"]["executor"] == "ray"
    ((key, entry),) = record["runs"].items()
    assert key.startswith("pytorch/") and entry["execution"]["node_id"] and len(entry["execution"]["gpu_ids"]) == 1

    expected, got = logit_files(local_run), logit_files(ray_run)
    assert set(got) == set(expected) and any(name.endswith("test.npy") for name in expected), (sorted(expected),
                                                                                               sorted(got))
    assert any("validation_epoch_001" in name for name in expected)
    for name, array in expected.items():
        assert (got[name].dtype, got[name].shape) == (array.dtype, array.shape), name
        assert got[name].tobytes() == array.tobytes(), \
            f"{name}: differs (largest difference {np.max(np.abs(got[name].astype(np.float64) - array)):.3g})"

    def checkpoint(run: Path) -> str:
        return json.loads((run / "metrics.json").read_text())["workers"]["pytorch"]["runs"][0]["schedule"][
            "checkpoint_sha256"]

    assert checkpoint(ray_run) == checkpoint(local_run)  # the same weights, not only the same outputs
