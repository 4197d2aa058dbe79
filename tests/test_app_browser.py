"""`harness app` in a real browser: Debian's chromium, driven by Selenium through Debian's chromium-driver,
against the page served by a subprocess from a real MLflow registry of null-worker models.

A person's path through the page: choose two models, upload a PNG and a DICOM, see both models'
probabilities and maps (a screenshot is saved); upload bad files and see why they are refused while the
page goes on; and ten people uploading at once all get their results. The same with the three frameworks'
models: tests/test_app_browser_frameworks.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from browser_session import (
    add_model,
    chromium,
    elements,
    open_page,
    photograph,
    require_browser,
    results,
    served_app,
    upload,
    wait_for,
)
from radiograph_files import chest_like, dicom_bytes, png_bytes
from registry_fixtures import registered_run
from selenium.webdriver.common.by import By

from harness.app.cards import default_selection, model_label
from harness.model_registry.registered import RegisteredModel
from harness.model_registry.store import list_models

SESSIONS = 10
# One test process for the whole file (pytest-xdist --dist loadgroup): its registry, server and chromium are made
# once, not once per process that happens to draw one of its tests.
pytestmark = pytest.mark.xdist_group("app-browser")


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> tuple[str, list[RegisteredModel]]:
    """A real registry: the null worker trained with two seeds and registered, two versions to compare."""
    folder = tmp_path_factory.mktemp("app-registry")
    uri, _ = registered_run(folder, "null", epochs=2, seeds="0,1", python=f"null={sys.executable}")
    models = list_models(uri)
    assert len(models) == 2, models
    return uri, models


@pytest.fixture(scope="module")
def server(registry, tmp_path_factory) -> Iterator[tuple[subprocess.Popen, str]]:
    """`harness app` on a free loopback port with a 1 MB upload limit: (process, URL)."""
    require_browser()
    with served_app(registry[0], tmp_path_factory.mktemp("app-server"), "--max-upload-mb", "1") as served:
        yield served


@pytest.fixture(scope="module")
def app_url(server) -> str:
    return server[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    made = {"chest.png": png_bytes(chest_like(256)),
            # As a detector writes it: 16-bit samples over their whole range, MONOCHROME1 (high values are dark).
            "chest.dcm": dicom_bytes((255 - chest_like(256, seed=1)).astype(np.uint16) * 257, photometric="MONOCHROME1",
                                     spacing=(0.139, 0.139)),
            "notes.png": b"meeting notes, not a radiograph\n",
            "huge.png": png_bytes(np.random.default_rng(0).integers(0, 256, (1200, 1200), np.uint8))}  # 1.4 MB
    for index in range(SESSIONS):
        made[f"patient{index}.png"] = png_bytes(chest_like(192, seed=10 + index))
    for name, data in made.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in made}


def test_two_models_read_a_png_and_a_dicom_in_chromium_and_the_page_is_photographed(app_url, registry, files,
                                                                                      tmp_path):
    models = registry[1]
    first = default_selection(models)
    assert len(first) == 1  # two versions of one model: the page starts with the aliased one
    labels = [model_label(model) for model in models]
    other = next(model_label(model) for model in models if model.reference() not in first)
    with chromium(tmp_path) as driver:
        open_page(driver, app_url)
        add_model(driver, other)
        upload(driver, files["chest.png"], files["chest.dcm"])
        wait_for(driver, lambda d: results(d, labels, images=2), "both models' tables and maps of both images")
        text = driver.find_element(By.TAG_NAME, "body").text
        assert "pixel spacing 0.139 x 0.139 mm (row x column)" in text and "DICOM MONOCHROME1" in text
        assert elements(driver, "stAlert") == []
        photograph(driver, tmp_path / "app.png")
    print(f"screenshot: {tmp_path / 'app.png'}")


def test_bad_uploads_show_their_message_in_the_browser_and_the_next_upload_works(app_url, registry, files, tmp_path):
    labels = [model_label(model) for model in registry[1] if model.reference() in default_selection(registry[1])]
    with chromium(tmp_path) as driver:
        open_page(driver, app_url)
        upload(driver, files["notes.png"])
        wait_for(driver, lambda d: any("notes.png: not an image" in alert.text for alert in elements(d, "stAlert")),
                 "the not-an-image message")
        upload(driver, files["huge.png"])  # refused by Streamlit itself (--max-upload-mb 1) before it is sent
        wait_for(driver, lambda d: "File must be 1.0MB or smaller" in d.find_element(By.TAG_NAME, "body").text,
                 "the size-limit message")
        upload(driver, files["chest.png"])
        wait_for(driver, lambda d: results(d, labels, images=1), "the next upload's table and map")


def test_ten_sessions_uploading_at_once_each_get_their_results_from_shared_workers(server, app_url, registry, files,
                                                                                   tmp_path):
    """Ten browser tabs (one chromium: ten chromiums do not fit two cores), each its own Streamlit session."""
    labels = [model_label(model) for model in registry[1] if model.reference() in default_selection(registry[1])]
    with chromium(tmp_path, height=900) as driver:
        tabs = []
        for index in range(SESSIONS):
            if index:
                driver.switch_to.new_window("tab")
            open_page(driver, app_url)
            tabs.append(driver.current_window_handle)
        started = time.monotonic()
        for index, tab in enumerate(tabs):  # every upload is sent before any result is awaited
            driver.switch_to.window(tab)
            upload(driver, files[f"patient{index}.png"])
        for index, tab in enumerate(tabs):
            driver.switch_to.window(tab)
            wait_for(driver, lambda d: results(d, labels, images=1), f"session {index}'s table and map")
            assert elements(driver, "stAlert") == [], f"session {index}"
        print(f"{SESSIONS} sessions got their results {time.monotonic() - started:.1f} s after the first upload")
        sidebar = elements(driver, "stSidebar")[0].text
    loaded = re.search(r"Loaded models \(shared by every user\): (\d+) ", sidebar)
    assert loaded and int(loaded[1]) <= len(registry[1]), sidebar  # one worker per model served all ten sessions
    # The page's process (Streamlit exec'd by `harness app`) has loaded no deep-learning framework's library.
    libraries = Path(f"/proc/{server[0].pid}/maps").read_text()
    assert not [name for name in ("libtorch", "torch/_C", "tensorflow", "jaxlib") if name in libraries]
    assert "cv2" in libraries  # the check sees the extension modules the page did load
