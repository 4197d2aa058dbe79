"""Experiment tracking: a finished (or failed) run directory logged to MLflow.

One parent MLflow run per benchmark run (parameters, every worker's final metrics, the report and
the result files as artifacts) and one child run per worker, seed and fold (its per-epoch curves
with the epoch as step, its test metrics). Everything is read back from the run directory, so what
MLflow shows is exactly what the report shows. MLflow is imported only here, only when asked for.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from cxrbench_worker.worker_labels import key_label
from harness.records.run_directory import RunDirectory

EXPERIMENT = "cxrbench"
EPOCH_METRICS = ("train_loss", "validation_loss", "validation_macro_auroc", "learning_rate", "seconds",
                 "train_images_per_second", "compute_images_per_second")
TEST_METRICS = ("macro_auroc", "micro_auroc", "macro_auprc", "micro_auprc", "precision", "recall", "f1", "loss")
ARTIFACTS = ("report.md", "report.html", "metrics.json", "significance.json", "parity.json", "run.json", "epochs.csv")


def tracking_uri(option: str, out: Path) -> str:
    """The MLflow tracking URI for `--mlflow` (empty: a SQLite store in the results folder)."""
    return option or f"sqlite:///{(out / 'mlflow.db').resolve()}"


def _flatten(prefix: str, value, into: dict) -> dict:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, into)
    else:
        into[prefix] = value
    return into


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN is not logged


def _test_metrics(test: dict, prefix: str = "test_") -> dict[str, float]:
    chosen = {f"{prefix}{key}": _number(test.get(key)) for key in TEST_METRICS}
    tuned = test.get("at_validation_thresholds")
    if tuned:
        chosen[f"{prefix}f1_validation_thresholds"] = _number(tuned.get("f1"))
    chosen.update({f"{prefix}auroc.{label}": _number(value) for label, value in test.get("auroc", {}).items()})
    return {key: value for key, value in chosen.items() if value is not None}


def _mlflow():
    try:
        import mlflow  # noqa: F401  (imported here only: a run without --mlflow never loads it)
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient
    except ImportError as error:
        raise RuntimeError(f"MLflow is not installed in the harness environment ({error}); "
                           "run `.venv/bin/pip install -e .` again") from error
    return MlflowClient, Metric, Param


def _experiment(client, uri: str, out: Path) -> str:
    found = client.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return found.experiment_id
    # A local store keeps its artifacts beside it, not in the working directory.
    location = (out / "mlflow-artifacts").resolve().as_uri() if uri.startswith("sqlite:///") else None
    return client.create_experiment(EXPERIMENT, artifact_location=location)


def log_run(run_dir: Path, option: str, out: Path) -> str:
    """Log `run_dir` to MLflow at `--mlflow`'s URI; returns the parent MLflow run's id."""
    MlflowClient, Metric, Param = _mlflow()
    uri = tracking_uri(option, out)
    client = MlflowClient(uri)
    directory = RunDirectory(run_dir)
    record = directory.read_run()
    metrics_path = run_dir / "metrics.json"
    workers = json.loads(metrics_path.read_text())["workers"] if metrics_path.exists() else {}
    now = int(time.time() * 1000)
    status = "FINISHED" if record["status"] == "completed" else "FAILED"

    experiment = _experiment(client, uri, out)
    parent = client.create_run(experiment, run_name=run_dir.name, tags={"cxrbench.run_dir": str(run_dir.resolve()),
                                                                         "cxrbench.status": record["status"]})
    params = _flatten("", {"config": record["config"], "data": {"content_sha256": record["data"]["content_sha256"]},
                           "git": record["provenance"]["git"]}, {})
    # MLflow keys allow no "@" nor brackets: keras[jax]@3.14.0 is keras-jax-v3.14.0 there (key_label).
    params.update({f"worker.{key_label(name)}.{package}": version for name, worker in record["workers"].items()
                   for package, version in worker.get("reported", {}).get("framework_versions", {}).items()})
    client.log_batch(parent.info.run_id,
                     params=[Param(key, str(value)[:6000]) for key, value in sorted(params.items())])
    summary = [Metric(f"{key_label(name)}.{key}", value, now, 0) for name, result in workers.items()
               for key, value in _test_metrics(result["test"]).items()]
    summary += [Metric(f"{key_label(name)}.seconds_per_epoch", value, now, 0) for name, result in workers.items()
                if (value := _number(result["efficiency"]["seconds_per_epoch"]["median"])) is not None]
    for start in range(0, len(summary), 1000):
        client.log_batch(parent.info.run_id, metrics=summary[start:start + 1000])

    epochs = directory.read_epochs()
    for name, result in workers.items():
        for run in result["runs"]:
            run_name = f"{name} seed {run['seed']}" + (f" fold {run['fold']}" if run.get("fold") else "")
            child = client.create_run(experiment, run_name=run_name, tags={"mlflow.parentRunId": parent.info.run_id})
            rows = [row for row in epochs if row["worker"] == name and row["seed"] == str(run["seed"])
                    and row["fold"] == (str(run["fold"]) if run.get("fold") else "")]
            series = [Metric(key, value, now, int(row["epoch"])) for row in rows for key in EPOCH_METRICS
                      if (value := _number(row.get(key))) is not None]
            finals = [Metric(key, value, now, 0) for key, value in _test_metrics(run["test"]).items()]
            if run["schedule"]["best_epoch"] is not None:
                finals.append(Metric("best_epoch", float(run["schedule"]["best_epoch"]), now, 0))
            client.log_batch(child.info.run_id, params=[Param("worker", name), Param("seed", str(run["seed"])),
                                                        Param("fold", str(run.get("fold") or ""))])
            metrics = series + finals
            for start in range(0, len(metrics), 1000):
                client.log_batch(child.info.run_id, metrics=metrics[start:start + 1000])
            client.set_terminated(child.info.run_id, status)

    for name in ARTIFACTS:
        if (run_dir / name).is_file():
            client.log_artifact(parent.info.run_id, str(run_dir / name))
    if (run_dir / "plots").is_dir():
        client.log_artifacts(parent.info.run_id, str(run_dir / "plots"), artifact_path="plots")
    client.set_terminated(parent.info.run_id, status)
    print(f"MLflow: logged as run {parent.info.run_id} of experiment '{EXPERIMENT}' at {uri}")
    return parent.info.run_id
