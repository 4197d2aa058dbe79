"""The summary printed when a dataset has been prepared: what is in the store, and what was left out."""

from __future__ import annotations

import numpy as np

from harness.data.pixel_store import PixelStore


def summary_lines(store: PixelStore) -> list[str]:
    """The end-of-prepare summary: images, patients, per-label counts, skipped files with reasons."""
    notes = store.notes
    lines = [f"{len(store):,} images of {len(np.unique(store.patient_ids)):,} patients at "
             f"{store.image_size}x{store.image_size} in {store.path}"]
    for key in ("no_patient_ids", "resized"):
        if notes.get(key):
            lines.append(notes[key])
    lines.append(box_line(store))
    counts = store.labels.sum(axis=0)
    lines.append("positives per label: " + ", ".join(
        f"{name} {int(count):,}" for name, count in zip(store.label_names, counts, strict=True)))
    lines.append(f"images with no finding: {int((store.labels.sum(axis=1) == 0).sum()):,}")
    for key, text in (("converted", "converted"), ("skipped", "skipped")):
        items = notes.get(key, [])
        lines.append(f"{text}: {len(items):,}")
        for item in items[:50]:
            lines.append(f"  {item['where']}: {item.get('reason') or item.get('note')}")
        if len(items) > 50:
            lines.append(f"  ... and {len(items) - 50:,} more (all listed in {store.path / 'meta.json'})")
    return lines


def box_line(store: PixelStore) -> str:
    """What the store says about its bounding boxes: the dataset's own sentence, or (stores prepared before
    datasets wrote one) the count."""
    if store.notes.get("bounding_boxes"):
        return str(store.notes["bounding_boxes"])
    if not len(store.boxes):
        return "no bounding boxes: localisation is not scored"
    return f"{len(store.boxes):,} bounding boxes on {len(np.unique(store.boxes[:, 0])):,} images"
