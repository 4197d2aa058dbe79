"""The page `harness app` serves: registered models of several frameworks read the user's chest X-rays.

A Streamlit script, run once per session and again on every interaction. It reads the registry (never
writes it), lets the user pick models and upload PNG, JPEG or DICOM files, and per image shows each
model's 14 probabilities side by side, the flags at each model's own validation thresholds, the
findings where the models disagree, and each model's class activation map for a chosen finding.

Every bad input ends in an st.error for that image (or that model) and the script goes on, so the page
keeps serving and the next upload works. Readings are kept per session, keyed by the file's SHA-256 and
the model, so choosing another finding does not send the image to the workers again; a failed reading
is not kept, so the next rerun asks again (and the pool restarts a dead worker).
"""

from __future__ import annotations

import hashlib

import numpy as np
import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile

from harness.app import services
from harness.app.cards import card_markdown, default_selection, escape_markdown, model_label, option_text
from harness.app.overlay import cam_overlay, display_image
from harness.app.page_settings import PageSettings, settings_from_environment
from harness.app.readings import FLAG, ModelReading, default_finding, findings, reading_of, styled_table
from harness.data.uploads import BadUpload, Radiograph, decode_upload, model_input
from harness.model_registry.registered import RegisteredModel
from harness.serving.reading import ServingError

UPLOAD_TYPES = ["png", "jpg", "jpeg", "dcm", "dicom"]
LEGEND = (f"{FLAG} = at or above that model's own threshold (chosen on validation data). Rows on yellow: the "
          "models disagree on the flag. Research use only: not a medical device.")


def describe(radiograph: Radiograph) -> list[str]:
    """The lines under an image: what the file was, its size, the DICOM pixel spacing, what was converted."""
    height, width = radiograph.pixels.shape
    lines = [f"{radiograph.source}, {width} x {height} px"]
    if radiograph.pixel_spacing_mm is not None:
        row, column = radiograph.pixel_spacing_mm
        lines.append(f"pixel spacing {row:g} x {column:g} mm (row x column): "
                     f"{height * row / 10:.1f} x {width * column / 10:.1f} cm")
    if radiograph.note:
        lines.append(radiograph.note)
    return lines


def read_image(pool: services.Pool, model: RegisteredModel, digest: str, image: np.ndarray) -> ModelReading:
    """This session's kept reading of the image by the model, asking the pool when there is none yet."""
    kept: dict[str, ModelReading] = st.session_state.setdefault("readings", {})
    key = f"{digest}:{model.name}/{model.version}"  # a version, so an alias moved meanwhile is not confused
    if key not in kept:
        with st.spinner(f"{model_label(model)} is reading the image…"):
            reading = pool.read(model.reference(), image[np.newaxis], maps=True)
        kept[key] = reading_of(model.reference(), reading, image)
    return kept[key]


def readings_of(radiograph: Radiograph, digest: str, models: list[RegisteredModel],
                pool: services.Pool) -> dict[str, ModelReading]:
    """Each model's reading of one image, by model label; a model that cannot read it shows an error instead."""
    readings = {}
    for model in models:
        label = model_label(model)
        try:
            image = model_input(radiograph, int(model.card["image_size"]))
        except BadUpload as error:
            st.error(escape_markdown(f"{label}: {error}"))
            continue
        try:
            readings[label] = read_image(pool, model, digest, image)
        except ServingError as error:
            st.error(escape_markdown(f"{label} could not read this image: {error}. "
                                     "The next request starts its worker again."))
        except ValueError as error:  # the registry no longer resolves it (deleted, alias moved to nothing)
            st.error(escape_markdown(f"{label} is not in the registry any more: {error}"))
    return readings


def show_maps(readings: dict[str, ModelReading], key: str) -> None:
    """A finding chooser and, for that finding, each model's class activation map over what it read."""
    choices = findings(readings)
    finding = st.selectbox("Finding to locate", choices, index=choices.index(default_finding(readings)), key=key)
    # At least three columns, each map filling its own: maps never overflow the panel, and one model's map is
    # not blown up to the page's width.
    columns = st.columns(max(len(readings), 3))
    for column, (label, reading) in zip(columns, readings.items(), strict=False):
        with column:
            if finding not in reading.labels:
                st.info(escape_markdown(f"{label} has no finding called {finding}"))
                continue
            row = reading.labels.index(finding)
            caption = (f"{label}: {finding} {reading.probabilities[row]:.3f}"
                       + (f" {FLAG}" if reading.flags[row] else ""))
            if reading.maps is None:
                st.info(escape_markdown(f"{caption} (its worker gave no map)"))
            else:
                st.image(cam_overlay(reading.image, reading.maps[row]), caption=caption, width="stretch")


def show_upload(upload: UploadedFile, index: int, models: list[RegisteredModel], pool: services.Pool,
                settings: PageSettings) -> str | None:
    """One uploaded file: its image, the models' table and maps, or the reason it cannot be read.

    Returns the file's digest when it was decoded (its readings are kept), else None.
    """
    st.subheader(escape_markdown(upload.name))
    data = upload.getvalue()
    try:
        radiograph = decode_upload(upload.name, data, settings.max_upload_bytes)
    except BadUpload as error:
        st.error(escape_markdown(str(error)))
        return None
    digest = hashlib.sha256(data).hexdigest()
    picture, numbers = st.columns([1, 2])
    with picture:
        st.image(display_image(radiograph.pixels), width="stretch")
        st.markdown("  \n".join(escape_markdown(line) for line in describe(radiograph)))
    with numbers:
        readings = readings_of(radiograph, digest, models, pool)
        if readings:
            st.table(styled_table(readings))
            st.caption(LEGEND)
    if readings:
        show_maps(readings, key=f"finding-{index}-{digest[:16]}")
    return digest


def forget_other_images(digests: set[str]) -> None:
    """Drop this session's readings of images no longer uploaded, so a long session's memory stays bounded."""
    kept: dict[str, ModelReading] = st.session_state.setdefault("readings", {})
    for key in [key for key in kept if key.split(":", 1)[0] not in digests]:
        del kept[key]


def show_memory(pool: services.Pool) -> None:
    """The sidebar's line on what this server holds: the loaded models (shared by every user) and their memory."""
    loaded = pool.memory()
    total = sum(loaded.values()) / 2**20
    with st.sidebar:
        st.markdown(f"**Loaded models** (shared by every user): {len(loaded)} ({total:,.0f} MB resident)"
                    + "".join(f"  \n`{reference}` {size / 2**20:,.0f} MB" for reference, size in loaded.items()))


def main() -> None:
    """The whole page, top to bottom."""
    settings = settings_from_environment()
    st.set_page_config(page_title="cxrbench: registered models on your chest X-rays", layout="wide")
    st.title("cxrbench: every framework's reading of your chest X-ray")
    with st.sidebar:
        st.markdown(f"**Registry** (read only)  \n`{settings.registry}`")
        st.markdown(f"Uploads up to {settings.max_upload_bytes / 2**20:g} MB each; idle models unload after "
                    f"{settings.idle_seconds / 60:g} min.")
    try:
        models = services.registered_models(settings.registry)
    except Exception as error:  # any registry failure (MLflow, SQLite, network) is shown, not raised
        st.error(escape_markdown(f"cannot read the model registry {settings.registry}: {error}"))
        return
    if not models:
        st.info(f"The registry {escape_markdown(settings.registry)} holds no models yet: run "
                "`harness register RUN_DIR` (or `harness benchmark --register`).")
        return
    by_reference = {model.reference(): model for model in models}
    chosen = st.multiselect("Models", list(by_reference), default=default_selection(models),
                            format_func=lambda reference: option_text(by_reference[reference]), key="models")
    for reference in chosen:
        with st.expander(f"Model card: {escape_markdown(model_label(by_reference[reference]))}"):
            st.markdown(card_markdown(by_reference[reference]))
    uploads = st.file_uploader("Chest X-rays: PNG, JPEG (8 or 16 bit, grey) or DICOM", type=UPLOAD_TYPES,
                               accept_multiple_files=True, key="uploads")
    if not chosen:
        st.warning("Choose at least one model.")
        return
    pool = services.model_pool(settings.registry, settings.idle_seconds)
    digests = set()
    for index, upload in enumerate(uploads or []):
        with st.container(border=True):
            digest = show_upload(upload, index, [by_reference[reference] for reference in chosen], pool, settings)
        if digest:
            digests.add(digest)
    forget_other_images(digests)
    show_memory(pool)  # after the readings, so it counts the models they loaded


main()
