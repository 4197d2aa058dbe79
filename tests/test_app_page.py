"""The page through Streamlit's own testing API (AppTest runs harness/app/page.py in this process), with a
fake model pool and a fake registry listing in place of harness.app.services' shared ones.

What a person sees: every chosen model's probabilities side by side, flags, the findings where the models
disagree highlighted, a map per model; every bad input gets its message and the next upload still works."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT
from radiograph_files import chest_like, colour_photo_png, dicom_bytes, png_bytes, truncated
from streamlit.testing.v1 import AppTest

from harness.app import services
from harness.app.readings import DISAGREE_BACKGROUND
from harness.data.datasets.labels import CHESTXRAY14_LABELS
from harness.model_registry.registered import RegisteredModel
from harness.serving.reading import Reading, ServingError, make_reading

PAGE = REPO_ROOT / "harness" / "app" / "page.py"
SIZE = 32
PYTORCH, KERAS = "cxrbench-resnet50-pytorch@champion", "cxrbench-resnet50-keras/2"
PYTORCH_LABEL, KERAS_LABEL = "cxrbench-resnet50-pytorch@champion (v1)", "cxrbench-resnet50-keras v2"
# Both models flag Effusion; only the PyTorch one flags Mass: Mass is where they disagree.
FLAGGED = {PYTORCH: ("Effusion", "Mass"), KERAS: ("Effusion",)}


def model(name: str, version: int, aliases: tuple[str, ...], worker: str, versions: dict) -> RegisteredModel:
    card = {"worker": worker, "architecture": "resnet50", "image_size": SIZE, "labels": list(CHESTXRAY14_LABELS),
            "thresholds": [0.5] * 14, "framework_versions": versions}
    return RegisteredModel(name, version, aliases, card, Path("/nowhere/model.safetensors"))


MODELS = [model("cxrbench-resnet50-keras", 2, (), "keras", {"keras": "3.14.0", "jax": "0.8.1"}),
          model("cxrbench-resnet50-pytorch", 1, ("champion",), "pytorch", {"torch": "2.9.1"})]


class FakePool:
    """Readings like harness.serving's ModelPool gives: logits +2 for a model's flagged findings, -2 else,
    and maps whose bright column moves with the finding; a reference in `failing` fails once."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.failing: set[str] = set()

    def read(self, reference: str, images: np.ndarray, maps: bool = False) -> Reading:
        self.calls.append(reference)
        assert images.dtype == np.uint8 and images.shape[1:] == (SIZE, SIZE) and maps
        if reference in self.failing:
            self.failing.discard(reference)  # the next request gets a fresh worker
            raise ServingError(f"model {reference}: its worker died during the request (log: /tmp/worker.log)")
        row = [2.0 if label in FLAGGED[reference] else -2.0 for label in CHESTXRAY14_LABELS]
        logits = np.array([row] * len(images))
        cams = np.zeros((len(images), 14, SIZE, SIZE), np.float32)
        for index in range(14):
            cams[:, index, :, index * 2] = 1.0
        return make_reading(reference, CHESTXRAY14_LABELS, np.full(14, 0.5), logits.astype(np.float32), cams)

    def memory(self) -> dict[str, int]:
        return {reference: 300 * 2**20 for reference in set(self.calls)}


@pytest.fixture
def pool(monkeypatch) -> FakePool:
    fake = FakePool()
    monkeypatch.setattr(services, "model_pool", lambda uri, idle_seconds: fake)
    monkeypatch.setattr(services, "registered_models", lambda uri: MODELS)
    monkeypatch.setenv("CXRBENCH_APP_REGISTRY", "sqlite:////fake/registry.db")
    monkeypatch.delenv("CXRBENCH_APP_MAX_UPLOAD_BYTES", raising=False)
    return fake


def page() -> AppTest:
    at = AppTest.from_file(str(PAGE), default_timeout=120)  # 2 shared cores: the first run imports a lot
    at.run()
    assert not at.exception, at.exception
    return at


def upload(at: AppTest, *files: tuple[str, bytes]) -> AppTest:
    mime = {"png": "image/png", "dcm": "application/dicom"}
    at.file_uploader[0].set_value([(name, data, mime[name.rsplit(".", 1)[1]]) for name, data in files]).run()
    assert not at.exception, at.exception
    return at


GOOD = ("chest.png", png_bytes(chest_like(64)))


def test_two_models_read_an_image_side_by_side_with_flags_disagreement_highlighted_and_maps(pool):
    at = upload(page(), GOOD)
    assert [error.value for error in at.error] == []
    table = at.table[0].value
    assert list(table.columns) == [KERAS_LABEL, PYTORCH_LABEL, "agreement"]  # in the registry's order
    assert table.loc["Effusion"].tolist() == ["0.881 ⚑", "0.881 ⚑", "all flag"]  # sigmoid(2) = 0.8808
    assert table.loc["Mass"].tolist() == ["0.119", "0.881 ⚑", "⚠ disagree (1 of 2 flag)"]
    assert table.loc["Hernia"].tolist() == ["0.119", "0.119", ""]
    assert DISAGREE_BACKGROUND.split(": ")[1] in at.table[0].proto.arrow_data.styler.styles  # the yellow row
    radiograph, *maps = at.image
    assert "PNG 8-bit grayscale, 64 x 64 px" in "\n".join(markdown.value for markdown in at.markdown)
    # The first disagreement is the finding shown first: each model's map of Mass.
    assert [image.captions for image in maps] == [[f"{KERAS_LABEL}: Mass 0.119"], [f"{PYTORCH_LABEL}: Mass 0.881 ⚑"]]
    assert sorted(pool.calls) == sorted([PYTORCH, KERAS])


def test_choosing_another_finding_shows_its_maps_without_asking_the_workers_again(pool):
    at = upload(page(), GOOD)
    at.selectbox[0].set_value("Effusion").run()
    assert [image.captions[0] for image in at.image[1:]] == [f"{KERAS_LABEL}: Effusion 0.881 ⚑",
                                                            f"{PYTORCH_LABEL}: Effusion 0.881 ⚑"]
    assert len(pool.calls) == 2  # the session kept both readings


def test_a_dicom_shows_its_pixel_spacing_and_a_png_and_a_dicom_get_a_table_each(pool):
    at = upload(page(), GOOD, ("chest.dcm", dicom_bytes(chest_like(64), spacing=(0.143, 0.15))))
    assert len(at.table) == 2 and len(at.selectbox) == 2 and [error.value for error in at.error] == []
    text = "\n".join(markdown.value for markdown in at.markdown)
    assert "DICOM MONOCHROME2" in text and "pixel spacing 0.143 x 0.15 mm (row x column): 0.9 x 1.0 cm" in text


BAD = {
    "not an image": (("notes.png", b"hello, this is a text file"), "notes.png: not an image"),
    "truncated": (("cut.png", truncated(png_bytes(chest_like(64)))), "cut.png: truncated PNG"),
    "colour photograph": (("holiday.png", colour_photo_png()), "holiday.png: colour image"),
    "DICOM without pixel data": (("report.dcm", dicom_bytes(chest_like(64), with_pixels=False)),
                                 "report.dcm: DICOM file without pixel data"),
    "over the size limit": (("huge.png", png_bytes(np.random.default_rng(0).integers(0, 256, (256, 256), np.uint8))),
                            "huge.png: file too large"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_upload_shows_its_message_and_the_next_upload_still_works(pool, monkeypatch, case):
    monkeypatch.setenv("CXRBENCH_APP_MAX_UPLOAD_BYTES", "20000")  # the good PNG is 3 kB, the noise PNG 65 kB
    bad, message = BAD[case]
    at = upload(page(), bad)
    assert len(at.error) == 1 and at.error[0].value.startswith(message), [error.value for error in at.error]
    assert len(at.table) == 0 and pool.calls == []
    upload(at, GOOD)
    assert len(at.error) == 0 and len(at.table) == 1 and len(at.image) == 3


def test_file_names_are_shown_as_they_are_not_as_markdown(pool):
    at = upload(page(), ("my_chest_*x*_ray.png", png_bytes(chest_like(64))), ("not_an_[image].png", b"plain text"))
    assert [header.value for header in at.subheader] == [r"my\_chest\_\*x\*\_ray.png", r"not\_an\_\[image\].png"]
    assert at.error[0].value.startswith(r"not\_an\_\[image\].png: not an image")


def test_an_image_too_small_for_the_models_says_so_for_each_and_the_next_upload_works(pool):
    at = upload(page(), ("tiny.png", png_bytes(chest_like(16))))
    assert [error.value for error in at.error] == [
        f"{label}: tiny.png: too small: 16 x 16 px; this model reads 32 x 32 px images; upload the radiograph at "
        "full resolution" for label in (KERAS_LABEL, PYTORCH_LABEL)]
    assert len(at.table) == 0 and "16 x 16 px" in "\n".join(markdown.value for markdown in at.markdown)
    upload(at, GOOD)
    assert len(at.error) == 0 and len(at.table) == 1


def test_a_worker_that_dies_shows_its_error_the_other_model_still_reads_and_the_next_request_retries(pool):
    pool.failing = {KERAS}
    at = upload(page(), GOOD)
    assert [error.value for error in at.error] == [
        f"{KERAS_LABEL} could not read this image: model {KERAS}: its worker died during the request "
        "(log: /tmp/worker.log). The next request starts its worker again."]
    assert list(at.table[0].value.columns) == [PYTORCH_LABEL, "agreement"]
    upload(at, ("second.png", png_bytes(chest_like(64, seed=1))))
    assert len(at.error) == 0 and list(at.table[0].value.columns) == [KERAS_LABEL, PYTORCH_LABEL, "agreement"]


def test_models_are_offered_with_their_framework_versions_and_their_cards_are_one_click_away(pool):
    at = page()
    chooser = at.multiselect[0]
    assert chooser.value == [KERAS, PYTORCH]  # both models, one version each
    assert chooser.options == [  # as the page shows them
        f"{KERAS_LABEL} · keras 3.14.0, jax 0.8.1", f"{PYTORCH_LABEL} · torch 2.9.1"]
    assert [expander.label for expander in at.expander] == [f"Model card: {label}" for label in (KERAS_LABEL,
                                                                                                 PYTORCH_LABEL)]
    card = at.expander[1].markdown[0].value
    assert "Aliases: @champion" in card and "| Effusion | 0.500 |" in card and '"worker": "pytorch"' in card


def test_with_one_model_chosen_only_its_column_is_shown(pool):
    at = page()
    at.multiselect[0].set_value([PYTORCH]).run()
    upload(at, GOOD)
    assert list(at.table[0].value.columns) == [PYTORCH_LABEL, "agreement"] and pool.calls == [PYTORCH]
    at.multiselect[0].set_value([]).run()
    assert at.warning[0].value == "Choose at least one model." and len(at.table) == 0


def test_an_empty_registry_says_how_to_register_and_an_unreadable_one_says_why(pool, monkeypatch):
    monkeypatch.setattr(services, "registered_models", lambda uri: [])
    assert "harness register RUN_DIR" in page().info[0].value

    def broken(uri: str) -> list[RegisteredModel]:
        raise RuntimeError("unable to open database file")

    monkeypatch.setattr(services, "registered_models", broken)
    assert page().error[0].value == ("cannot read the model registry sqlite:////fake/registry.db: "
                                     "unable to open database file")


def test_the_sidebar_shows_the_registry_and_the_shared_models_memory(pool):
    at = upload(page(), GOOD)
    sidebar = "\n".join(markdown.value for markdown in at.sidebar.markdown)
    assert "`sqlite:////fake/registry.db`" in sidebar and "Uploads up to 50 MB each" in sidebar
    assert "**Loaded models** (shared by every user): 2 (600 MB resident)" in sidebar
