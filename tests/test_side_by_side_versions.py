"""Two versions of one worker in one local benchmark: separate environments, columns and records.

The worker here is a copy of the null worker with a made-up framework, "toyframework", so nothing
is installed: the environments are stood in by the harness's own interpreter, each under the key
of its own requirements (and the null worker reports no toyframework version to check). (A real two-Keras run is in the closing note of issue 6 and in the README.)
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from conftest import REPO_ROOT, SMALL_RUN
from harness import cli, config
from harness.runtime.registry import resolve_workers
from harness.runtime import local
from harness.runtime.environments import WorkerEnvironment, environment_key
from cxrbench_worker.requirements import requirements_text


def test_two_versions_run_side_by_side_and_the_report_shows_both(tmp_path, monkeypatch, capsys):
    root = tmp_path / "workers"
    shutil.copytree(REPO_ROOT / "workers" / "null", root / "toy", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "toy" / "cxrbench_null").rename(root / "toy" / "cxrbench_toy")  # a worker's package bears its name
    (root / "toy" / "worker.toml").write_text('name = "toy"\nbackend = "cxrbench_toy.trainer:NullBackend"\n'
                                             'requirements = "requirements.txt"\nframework_package = "toyframework"\n')
    (root / "toy" / "requirements.txt").write_text("toyframework==1.1\ngrpcio==1.85.1\n")
    installed: list[tuple[str | None, str]] = []

    def host_environment(folder, cache=None, version=None, gpu=False) -> WorkerEnvironment:
        if folder.requirements is None:  # the null worker that measures the harness's ceiling
            return WorkerEnvironment(Path(sys.executable), "host", "0" * 64)
        text = requirements_text(folder, version)
        installed.append((version, text))
        return WorkerEnvironment(Path(sys.executable), environment_key(text), "0" * 64)

    monkeypatch.setattr(config, "resolve_workers", lambda text: resolve_workers(text, root))
    monkeypatch.setattr(local, "ensure_environment", host_environment)
    out = tmp_path / "results"
    assert cli.main(["benchmark", "--workers", "toy@1.0,toy@1.1", "--epochs", "1", "--bootstrap", "0",
                     "--out", str(out), *SMALL_RUN]) == 0
    # Made two at a time (LocalRuntime.prepare), so in either order.
    assert sorted(installed) == [("1.0", "toyframework==1.0\ngrpcio==1.85.1\n"), ("1.1", "toyframework==1.1\ngrpcio==1.85.1\n")]
    printed = capsys.readouterr().out
    assert "toy@1.0: test macro AUROC" in printed and "toy@1.1: test macro AUROC" in printed

    (run,) = out.iterdir()
    record = json.loads((run / "run.json").read_text())
    assert list(record["workers"]) == ["toy@1.0", "toy@1.1"]
    keys = [record["workers"][label]["environment"]["key"] for label in record["workers"]]
    assert keys[0] != keys[1]
    assert [record["workers"][label]["framework_version"] for label in record["workers"]] == ["1.0", "1.1"]
    assert all(record["workers"][label]["worker"] == "toy" for label in record["workers"])
    metrics = json.loads((run / "metrics.json").read_text())["workers"]
    assert list(metrics) == ["toy@1.0", "toy@1.1"]
    assert (run / "logits" / "toy@1.0" / "test.npy").is_file() and (run / "workers" / "toy@1.1.log").is_file()
    report = (run / "report.md").read_text()
    for label in ("toy@1.0", "toy@1.1"):
        assert f"| {label} |" in report and f"- `{label}` reported:" in report
