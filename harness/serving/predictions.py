"""`harness predict`'s outputs: a table to read on the terminal and a CSV with one row per image,
model and label."""

from __future__ import annotations

import csv
from pathlib import Path

from harness.serving.reading import Reading

CSV_COLUMNS = ("image", "model", "label", "probability", "threshold", "flagged")
FLAG = "*"


def csv_rows(images: list[str], readings: list[Reading]) -> list[tuple[str, ...]]:
    """Rows per image x model x label, images and models in the order given; `readings` (one per
    model) each cover `images` in order."""
    rows: list[tuple[str, ...]] = []
    for index, image in enumerate(images):
        for reading in readings:
            for column, label in enumerate(reading.labels):
                rows.append((image, reading.model, label, f"{reading.probabilities[index, column]:.9g}",
                             f"{reading.thresholds[column]:.9g}", "true" if reading.flags[index, column] else "false"))
    return rows


def write_csv(path: Path, images: list[str], readings: list[Reading]) -> int:
    """Write the predictions CSV (header CSV_COLUMNS); returns the number of rows written."""
    rows = csv_rows(images, readings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)
    return len(rows)


def table(images: list[str], readings: list[Reading], notes: dict[str, str] | None = None) -> str:
    """Per image: its name (and `notes[image]`, e.g. how it was decoded), then per label each model's
    probability, with FLAG where it reaches that model's threshold."""
    labels: list[str] = []  # every model's labels, in order of first appearance (they are normally the same 14)
    for reading in readings:
        labels += [label for label in reading.labels if label not in labels]
    label_width = max((len(label) for label in labels), default=5)
    widths = [max(len(reading.model), 6) for reading in readings]
    lines = []
    for index, image in enumerate(images):
        note = (notes or {}).get(image)
        lines.append(f"{image}" + (f" ({note})" if note else ""))
        header = "  " + "finding".ljust(label_width) + "".join(
            "  " + reading.model.rjust(width) for reading, width in zip(readings, widths, strict=True))
        lines.append(header)
        for label in labels:
            cells = []
            for reading, width in zip(readings, widths, strict=True):
                if label in reading.labels:
                    column = reading.labels.index(label)
                    flag = FLAG if reading.flags[index, column] else " "
                    cells.append(f"{reading.probabilities[index, column]:.3f}{flag}".rjust(width))
                else:
                    cells.append("-".rjust(width))
            lines.append("  " + label.ljust(label_width) + "".join("  " + cell for cell in cells))
        lines.append("")
    if images:
        lines.append(f"{FLAG} probability at or above the model's threshold for that finding (chosen on validation)")
    return "\n".join(lines)
