"""--mlflow: a benchmark logged to MLflow is read back through MLflow's own client API."""

from __future__ import annotations

import json

import pytest

from conftest import REPO_ROOT, SMALL_RUN, run_harness

mlflow = pytest.importorskip("mlflow")  # a core dependency: skipped only in a broken environment
from mlflow.tracking import MlflowClient  # noqa: E402


def test_a_benchmark_logged_to_the_local_store_reads_back_with_its_metrics(tmp_path):
    out = tmp_path / "results"
    result = run_harness(["benchmark", "--workers", "null", *SMALL_RUN, "--epochs", "4", "--seeds", "0,1",
                          "--bootstrap", "200", "--mlflow", "--out", str(out)], REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert f"at sqlite:///{(out / 'mlflow.db').resolve()}" in result.stdout
    (run_dir,) = [path for path in out.iterdir() if path.is_dir() and path.name != "mlflow-artifacts"]
    metrics = json.loads((run_dir / "metrics.json").read_text())["workers"]["null"]

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cxrbench")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = sorted((run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id),
                      key=lambda run: run.data.params["seed"])
    assert parent.info.run_name == run_dir.name and parent.info.status == "FINISHED"
    assert parent.data.params["config.seeds"] == "[0, 1]" and parent.data.params["config.epochs"] == "4"
    assert parent.data.params["data.content_sha256"] == json.loads((run_dir / "run.json").read_text())["data"]["content_sha256"]
    assert parent.data.metrics["null.test_macro_auroc"] == metrics["test"]["macro_auroc"] == 0.5
    assert parent.data.metrics["null.test_f1"] == pytest.approx(metrics["test"]["f1"])

    # One child per run, with the per-epoch curves (step = epoch) and the run's test metrics.
    assert [child.data.params["seed"] for child in children] == ["0", "1"]
    for child, run in zip(children, metrics["runs"]):
        history = client.get_metric_history(child.info.run_id, "validation_loss")
        assert [point.step for point in history] == [1, 2, 3, 4]
        rates = sorted(client.get_metric_history(child.info.run_id, "learning_rate"), key=lambda point: point.step)
        assert [point.value for point in rates] == pytest.approx([3e-4, 3e-4, 3e-4, 3e-5])  # a plateau: cut after epoch 3
        assert child.data.metrics["best_epoch"] == run["schedule"]["best_epoch"] == 1
        assert child.data.metrics["test_macro_auroc"] == 0.5

    artifacts = {item.path for item in client.list_artifacts(parent.info.run_id)}
    assert {"report.md", "report.html", "metrics.json", "significance.json", "run.json", "plots"} <= artifacts
    assert (out / "mlflow-artifacts").is_dir()  # kept beside the store, not in the working directory


def test_an_unreachable_tracking_uri_fails_the_command_but_keeps_the_results(tmp_path):
    out = tmp_path / "results"
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    result = run_harness(["benchmark", "--workers", "null", "--epochs", "1", "--bootstrap", "0",
                          "--mlflow", f"sqlite:///{blocked}/mlflow.db", "--out", str(out), *SMALL_RUN], REPO_ROOT)
    assert result.returncode == 1
    assert "--mlflow: could not log the run" in result.stderr and "Traceback" not in result.stderr
    (run_dir,) = out.iterdir()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
    assert (run_dir / "report.html").is_file()


def test_worker_labels_become_keys_mlflow_accepts():
    """keras[jax]@3.14.0's brackets and "@" are refused in MLflow keys: its key form is used there."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_metric_name

    from cxrbench_worker.worker_labels import key_label

    with pytest.raises(MlflowException):
        _validate_metric_name("keras[jax]@3.14.0.test_macro_auroc")
    for label, key in (("keras[jax]@3.14.0", "keras-jax-v3.14.0"), ("keras@3.14.0", "keras-v3.14.0"),
                       ("keras[torch]", "keras-torch"), ("pytorch", "pytorch")):
        assert key_label(label) == key
        _validate_metric_name(f"{key}.test_macro_auroc")
