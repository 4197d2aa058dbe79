"""Issue 18's end to end: a benchmark with --register, the registry read back, `harness predict` on test images.

The three framework workers train briefly (one epoch) and register; `harness predict` then reads three of the
phantom's test images, written as PNG files as a user would have them, and its probabilities must equal the
ones the benchmark saved for the same images (sigmoid of the saved test logits) to fp32 tolerance.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import run_harness
from registry_fixtures import shared_framework_registry

from harness.data.pixel_store import open_store
from harness.model_registry.store import list_models

pytestmark = pytest.mark.framework
WORKERS = ("pytorch", "tensorflow", "keras")


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    return shared_framework_registry(tmp_path_factory.getbasetemp())


def test_the_registry_lists_one_model_per_worker_with_its_card(registry):
    uri, run_dir = registry
    models = {model.name: model for model in list_models(uri)}
    assert sorted(models) == [f"cxrbench-resnet50-{worker}" for worker in sorted(WORKERS)]
    run = json.loads((run_dir / "run.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())["workers"]
    for worker in WORKERS:
        model = models[f"cxrbench-resnet50-{worker}"]
        card = model.card
        assert model.aliases == ("champion",) and model.version == 1
        assert card["worker"] == worker and card["architecture"] == "resnet50" and card["image_size"] == 48
        assert card["framework_versions"] == run["workers"][worker]["reported"]["framework_versions"]
        assert card["test"]["macro_auroc"]["estimate"] == pytest.approx(metrics[worker]["test"]["macro_auroc"])
        assert card["parity"]["included"] and card["data_sha256"] == run["data"]["content_sha256"]
        assert model.native is not None and model.native.stat().st_size > 10_000_000  # ResNet-50 in its own format
        print(f"{model.name} v{model.version} @{model.aliases[0]}: {card['framework_versions']}, test macro AUROC "
              f"{card['test']['macro_auroc']}")


def test_predict_on_three_test_images_equals_what_the_benchmark_saved(registry, tmp_path):
    uri, run_dir = registry
    store = open_store(Path(json.loads((run_dir / "run.json").read_text())["data"]["store"]))
    test_indices = np.load(run_dir / "labels" / "test_indices.npy")
    paths = []
    for position in range(3):
        path = tmp_path / f"test{position}.png"
        assert cv2.imwrite(str(path), store.pixels[test_indices[position]])
        paths.append(str(path))
    out = tmp_path / "predictions.csv"
    done = run_harness(["predict", *[arg for worker in WORKERS for arg in ("--model", f"cxrbench-resnet50-{worker}@champion")],
                        "--registry", uri, "--out", str(out), *paths], cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    print(done.stdout)
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * 3 * 14
    labels = json.loads((run_dir / "run.json").read_text())["data"]["label_names"]
    metrics = json.loads((run_dir / "metrics.json").read_text())["workers"]
    for worker in WORKERS:
        saved = np.load(run_dir / metrics[worker]["runs"][0]["logits"] / "test.npy")[:3].astype(np.float64)
        expected = 1.0 / (1.0 + np.exp(-saved))
        got = np.array([[float(row["probability"]) for row in rows
                         if row["model"] == f"cxrbench-resnet50-{worker}@champion" and row["image"].endswith(f"test{i}.png")]
                        for i in range(3)])
        assert got.shape == (3, len(labels))
        difference = np.abs(got - expected).max()
        print(f"{worker}: max |probability - saved| = {difference:.2e}")
        assert difference < 1e-5
