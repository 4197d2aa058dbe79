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
