"""The MLflow Model Registry behind `harness register`, `harness predict` and `harness app`.

One registered model per (architecture, worker), e.g. `cxrbench-resnet50-pytorch`; one version per training
run registered. A version's artifacts (`model/`): `model.safetensors` (the neutral weights every worker
loads), `native.tar` (the framework's own export), `card.json` and `card.md`; its description is the card.
The default store is SQLite beside the run directories (`results/mlflow.db`), as `--mlflow` uses; any MLflow
tracking URI works. MLflow is imported here only, only when asked for.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from harness.model_registry.cards import RunModel, card_json, card_markdown, registered_name
from harness.model_registry.registered import RegisteredModel

ARTIFACT_PATH = "model"
WEIGHTS_FILE, NATIVE_FILE, CARD_FILE, CARD_MARKDOWN = "model.safetensors", "native.tar", "card.json", "card.md"
_REFERENCE = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>\d+))?$")


def registry_uri(option: str | None, results: Path = Path("results")) -> str:
    """The registry's MLflow URI: `option` when given, else a SQLite store in `results/` (made if missing)."""
    if option:
        return option
    results.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(results / 'mlflow.db').resolve()}"


def _client(uri: str):
    try:
        import logging

        from mlflow.tracking import MlflowClient
    except ImportError as error:
        raise RuntimeError(f"MLflow is not installed in the harness environment ({error}); "
                           "run `.venv/bin/pip install -e .` again") from error
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its "creating tables" chatter on every call
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _experiment(client, uri: str) -> str:
    from harness.tracking import EXPERIMENT

    found = client.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):  # a local store keeps its artifacts beside it, not in the working folder
        location = (Path(uri.removeprefix("sqlite:///")).parent / "mlflow-artifacts").resolve().as_uri()
    return client.create_experiment(EXPERIMENT, artifact_location=location)


def register_models(models: Iterable[RunModel], native: dict[str, bytes], uri: str, alias: str | None = None,
                    champions: set[str] | None = None) -> list[tuple[str, int]]:
    """Register each run's model as a new version of its registered model; returns (name, version) each.

    `native[run_key]` is the framework's own export of that run (a tar), where one was made. `alias` is
    set on the versions whose run key is in `champions` (one per registered model).
    """
    client = _client(uri)
    experiment = _experiment(client, uri)
    registered = []
    for model in models:
        name = registered_name(model.card["architecture"], model.worker)
        if not client.search_registered_models(filter_string=f"name = '{name}'"):
            client.create_registered_model(name, description=(
                f"{model.card['architecture']} trained by the `{model.worker}` worker of cxrbench; one version per "
                "training run registered, each with its model card."), tags={"worker": model.worker})
        run = client.create_run(experiment, run_name=f"register {model.run_key}",
                                tags={"cxrbench.run_dir": model.card["run_dir"], "cxrbench.run": model.run_key})
        with tempfile.TemporaryDirectory(prefix="cxrbench-register-") as folder:
            staged = Path(folder) / ARTIFACT_PATH
            staged.mkdir()
            (staged / WEIGHTS_FILE).write_bytes(model.weights.read_bytes())
            (staged / CARD_FILE).write_text(card_json(model.card))
            (staged / CARD_MARKDOWN).write_text(card_markdown(name, "(this one)", model.card))
            if model.run_key in native:
                (staged / NATIVE_FILE).write_bytes(native[model.run_key])
            client.log_artifacts(run.info.run_id, str(staged), ARTIFACT_PATH)
        client.set_terminated(run.info.run_id, "FINISHED")
        version = client.create_model_version(
            name, source=f"{run.info.artifact_uri}/{ARTIFACT_PATH}", run_id=run.info.run_id,
            tags={"worker": model.worker, "run_id": model.card["run_id"], "run": model.run_key,
                  "seed": str(model.card["seed"]), "weights_sha256": model.card["weights_sha256"]})
        client.update_model_version(name, version.version, description=card_markdown(name, version.version,
                                                                                      model.card))
        if alias and champions and model.run_key in champions:
            client.set_registered_model_alias(name, alias, version.version)
        registered.append((name, int(version.version)))
    return registered


def set_alias(reference: str, alias: str, uri: str) -> RegisteredModel:
    """Point `alias` at the version `reference` names (`name/3`, `name@other`, or `name`: the latest)."""
    model = resolve(reference, uri)
    _client(uri).set_registered_model_alias(model.name, alias, str(model.version))
    return resolve(f"{model.name}@{alias}", uri)


def _local_artifacts(source: str, cache: Path | None) -> Path:
    """The version's artifact folder on this machine: read in place when local, else downloaded once."""
    import mlflow.artifacts

    if source.startswith("file://") or source.startswith("/"):
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=source))  # a local path: nothing is copied
    target = Path(tempfile.mkdtemp(prefix="cxrbench-model-", dir=cache))
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(target)))


def _registered(client, version, cache: Path | None) -> RegisteredModel:
    folder = _local_artifacts(version.source, cache)
    card_path = folder / CARD_FILE
    if not card_path.is_file():
        raise ValueError(f"{version.name} version {version.version}: no {CARD_FILE} among its artifacts "
                         f"({version.source}); it was not registered by `harness register`")
    aliases = tuple(sorted(getattr(version, "aliases", None) or ()))
    native = folder / NATIVE_FILE
    return RegisteredModel(name=version.name, version=int(version.version), aliases=aliases,
                           card=json.loads(card_path.read_text()), weights=folder / WEIGHTS_FILE,
                           native=native if native.is_file() else None)


def resolve(reference: str, uri: str, cache: Path | None = None) -> RegisteredModel:
    """The registered model `reference` names: `name@alias`, `name/version`, or `name` (its latest version).

    ValueError naming the reference and what the registry has when it names nothing there.
    """
    match = _REFERENCE.match(reference.strip())
    if match is None:
        raise ValueError(f"--model {reference!r}: expected NAME, NAME@ALIAS or NAME/VERSION "
                         "(e.g. cxrbench-resnet50-pytorch@champion)")
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    name = match["name"]
    try:
        if match["alias"]:
            version = client.get_model_version_by_alias(name, match["alias"])
        elif match["version"]:
            version = client.get_model_version(name, match["version"])
        else:
            versions = client.search_model_versions(filter_string=f"name = '{name}'")
            if not versions:
                raise MlflowException(f"no version of {name}")
            version = max(versions, key=lambda found: int(found.version))
    except MlflowException as error:
        known = ", ".join(sorted(model.name for model in client.search_registered_models())) or "none"
        raise ValueError(f"--model {reference}: not in the registry at {uri} ({error.message}); "
                         f"registered models: {known}") from None
    return _registered(client, client.get_model_version(version.name, version.version), cache)


def list_models(uri: str, cache: Path | None = None) -> list[RegisteredModel]:
    """Every version of every registered model of cxrbench, by name then version (newest last)."""
    client = _client(uri)
    found = []
    for model in sorted(client.search_registered_models(), key=lambda model: model.name):
        for version in sorted(client.search_model_versions(filter_string=f"name = '{model.name}'"),
                              key=lambda version: int(version.version)):
            try:  # a version found by search carries no aliases: read each one whole
                found.append(_registered(client, client.get_model_version(model.name, version.version), cache))
            except ValueError:
                continue  # a model registered by other means: not ours to serve
    return found
