"""The page in chromium with the three frameworks' registered models: each framework's probabilities and map.

The models are the ones tests/test_registry_predict.py registers (one epoch of each framework, shared per
test session). A phantom test image as a PNG and a DICOM of another are uploaded; each image must show one
column per framework, 14 findings, and one loaded map per framework. The screenshot is saved (docs/app.png
is one such picture).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from browser_session import add_model, chromium, elements, open_page, photograph, results, served_app, upload, wait_for
from radiograph_files import dicom_bytes, png_bytes
from registry_fixtures import shared_framework_registry
from selenium.webdriver.common.by import By

from harness.app.cards import default_selection, model_label
from harness.data.pixel_store import open_store
from harness.model_registry.store import list_models

pytestmark = pytest.mark.framework
WORKERS = ("pytorch", "tensorflow", "keras")


def test_three_frameworks_read_a_png_and_a_dicom_in_chromium(tmp_path_factory, tmp_path):
    uri, run_dir = shared_framework_registry(tmp_path_factory.getbasetemp())
    models = [model for model in list_models(uri) if model.card["worker"] in WORKERS]
    assert len(models) == 3 and len(default_selection(models)) == 3  # one per framework, all chosen at first
    labels = [model_label(model) for model in models]
    store = open_store(Path(json.loads((run_dir / "run.json").read_text())["data"]["store"]))
    test = np.load(run_dir / "labels" / "test_indices.npy")
    png, dicom = tmp_path / "phantom_test.png", tmp_path / "phantom_test.dcm"
    png.write_bytes(png_bytes(store.pixels[test[0]]))
    dicom.write_bytes(dicom_bytes(store.pixels[test[1]].astype(np.uint16) * 257, spacing=(0.143, 0.143)))
    with served_app(uri, tmp_path) as (_, url), chromium(tmp_path) as driver:
        open_page(driver, url)
        chosen = [tag.text for tag in elements(driver, "stMultiSelect")[0].find_elements(By.CSS_SELECTOR, "[data-tag]")]
        for label in labels:
            if not any(label in text for text in chosen):
                add_model(driver, label)
        upload(driver, png, dicom)
        wait_for(driver, lambda d: results(d, labels, images=2), "three frameworks' tables and maps of both images")
        text = driver.find_element(By.TAG_NAME, "body").text
        for worker in WORKERS:
            assert f"cxrbench-resnet50-{worker}@champion" in text
        assert "pixel spacing 0.143 x 0.143 mm" in text and elements(driver, "stAlert") == []
        photograph(driver, tmp_path / "app.png")
    print(f"screenshot: {tmp_path / 'app.png'}")
