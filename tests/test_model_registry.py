"""The model registry: `benchmark --register`, `harness register`, `harness models`, read back through MLflow."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest
from conftest import run_harness
from registry_fixtures import registered_run

from harness.model_registry.cards import registered_name, run_models
from harness.model_registry.command import champions
from harness.model_registry.inference import checked_weights
from harness.model_registry.store import list_models, resolve


@pytest.fixture(scope="module")
def null_registry_run(tmp_path_factory):
    """Two training seeds of the null worker, registered: (uri, run directory, folder)."""
    folder = tmp_path_factory.mktemp("registry")
    uri, run_dir = registered_run(folder, "null", epochs=2, seeds="0,1", python="null=" + __import__("sys").executable)
    return uri, run_dir, folder


def test_every_run_is_a_version_with_its_weights_native_export_and_card(null_registry_run):
    uri, run_dir, _ = null_registry_run
    models = list_models(uri)
    assert [(model.name, model.version) for model in models] == [("cxrbench-resnet50-null", 1),
                                                                  ("cxrbench-resnet50-null", 2)]
    metrics = json.loads((run_dir / "metrics.json").read_text())["workers"]["null"]["runs"]
    for model, run in zip(models, metrics, strict=True):
        card = model.card
        assert card["worker"] == "null" and card["architecture"] == "resnet50" and card["image_size"] == 48
        assert card["seed"] == run["seed"] and card["run_id"] == run_dir.name
        assert card["labels"][0] == "Atelectasis" and len(card["thresholds"]) == 14
        assert card["thresholds"] == [run["test"]["at_validation_thresholds"]["thresholds"][label]
                                      for label in card["labels"]]
        saved = (run_dir / run["model"]).read_bytes()
        assert model.weights.read_bytes() == saved
        assert card["weights_sha256"] == hashlib.sha256(saved).hexdigest() == run["schedule"]["checkpoint_sha256"]
        macro = card["test"]["macro_auroc"]
        assert macro["low"] <= macro["estimate"] <= macro["high"]
        assert card["framework_versions"]["numpy"] and card["commit"]
        assert card["parity"]["workers"] == ["null"]
        with tarfile.open(fileobj=io.BytesIO(model.native.read_bytes())) as archive:
            assert archive.getnames() == ["weights.npz"]  # the null worker's own format


def test_models_list_show_and_alias_commands(null_registry_run):
    uri, run_dir, folder = null_registry_run
    listed = run_harness(["models", "list", "--registry", uri], cwd=folder)
    assert listed.returncode == 0, listed.stderr
    assert "cxrbench-resnet50-null v1 @champion: null" in listed.stdout
    assert "test macro AUROC 0.5000 [0.5000, 0.5000]" in listed.stdout and "2 registered version(s)" in listed.stdout
    shown = run_harness(["models", "show", "cxrbench-resnet50-null/2", "--registry", uri], cwd=folder)
    assert shown.returncode == 0 and "### cxrbench-resnet50-null version 2" in shown.stdout
    assert "| Atelectasis |" in shown.stdout and "test-set sampling noise only" in shown.stdout
    moved = run_harness(["models", "alias", "cxrbench-resnet50-null/2", "staging", "--registry", uri], cwd=folder)
    assert moved.returncode == 0 and "v2 @staging" in moved.stdout
    assert resolve("cxrbench-resnet50-null@staging", uri).version == 2
    assert resolve("cxrbench-resnet50-null", uri).version == 2  # no alias, no version: the latest


def test_unknown_references_name_what_the_registry_has(null_registry_run):
    uri, _, folder = null_registry_run
    with pytest.raises(ValueError, match="registered models: cxrbench-resnet50-null"):
        resolve("cxrbench-resnet50-pytorch@champion", uri)
    with pytest.raises(ValueError, match="expected NAME, NAME@ALIAS or NAME/VERSION"):
        resolve("two words", uri)
    failed = run_harness(["models", "show", "cxrbench-resnet50-null@nope", "--registry", uri], cwd=folder)
    assert failed.returncode == 2 and "not in the registry" in failed.stderr


def test_register_again_adds_versions_and_points_the_alias_at_the_validation_champion(null_registry_run, tmp_path):
    uri, run_dir, folder = null_registry_run
    done = run_harness(["register", str(run_dir), "--registry", uri, "--alias", "best", "--no-native"], cwd=folder)
    assert done.returncode == 0, done.stderr
    assert "registered cxrbench-resnet50-null version 3" in done.stdout and "version 4" in done.stdout
    best = resolve("cxrbench-resnet50-null@best", uri)
    assert best.version == 3 and best.native is None  # equal validation AUROC (0.5): the first run
    assert resolve("cxrbench-resnet50-null/4", uri).card["seed"] == 1


def test_champions_are_chosen_on_validation_auroc_per_worker(null_registry_run):
    _, run_dir, _ = null_registry_run
    models = run_models(run_dir)
    assert champions(models) == {"null/seed0"}
    better = models[1].card | {"validation": {"macro_auroc": 0.9, "best_epoch": 1}}
    models[1] = type(models[1])(models[1].worker, models[1].run_key, models[1].weights, better)
    assert champions(models) == {"null/seed1"}


def test_damaged_weights_are_refused_naming_the_file(null_registry_run, tmp_path):
    uri, _, _ = null_registry_run
    model = resolve("cxrbench-resnet50-null/1", uri)
    copy = tmp_path / "model.safetensors"
    data = bytearray(model.weights.read_bytes())
    data[-1] ^= 1
    copy.write_bytes(bytes(data))
    assert checked_weights(model.weights, model.card) == model.weights.read_bytes()
    with pytest.raises(ValueError, match=f"{copy}: SHA-256 .* is not the model card's"):
        checked_weights(copy, model.card)


def test_a_run_directory_without_kept_models_is_refused(tmp_path, cpu_null_run):
    _, run_dir = cpu_null_run
    assert run_models(run_dir)  # runs keep their model now
    with pytest.raises(ValueError, match="not a run directory"):
        run_models(tmp_path)


def test_registered_names_carry_architecture_worker_and_pinned_version():
    assert registered_name("resnet50", "pytorch") == "cxrbench-resnet50-pytorch"
    assert registered_name("densenet121", "keras@3.14.0") == "cxrbench-densenet121-keras-v3.14.0"
    # A variant's brackets are not for MLflow names: keras[jax] is keras-jax there, as in file names.
    assert registered_name("resnet50", "keras[jax]") == "cxrbench-resnet50-keras-jax"
    assert registered_name("resnet50", "keras[torch]@3.14.0") == "cxrbench-resnet50-keras-torch-v3.14.0"
