"""Several models' readings of one image, side by side: the table the page shows and where the models disagree.

Pure functions of arrays, so the page's content is tested without a browser or a server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd  # type: ignore[import-untyped]  # pandas ships no types; streamlit depends on it
from pandas.io.formats.style import Styler  # type: ignore[import-untyped]

FLAG = "⚑"  # marks a probability at or above that model's own validation threshold
AGREEMENT = "agreement"
DISAGREE = "⚠ disagree"
# Colours chosen to read on the light theme and to survive a greyscale printout (pale row, dark bold cell).
DISAGREE_BACKGROUND = "background-color: #ffe08a"
FLAGGED_CELL = "font-weight: bold; color: #a4161a"


@dataclass(frozen=True)
class ModelReading:
    """One model's reading of one image, as the page keeps it between reruns."""

    reference: str  # the registry reference the pool served, e.g. "cxrbench-resnet50-pytorch@champion"
    labels: tuple[str, ...]
    probabilities: np.ndarray  # (L,) float
    flags: np.ndarray  # (L,) bool: probability >= this model's validation threshold
    thresholds: np.ndarray  # (L,) float: the card's thresholds, chosen on validation data
    image: np.ndarray  # (s, s) uint8: exactly what the model read (decoded, resized to its input size)
    maps: np.ndarray | None  # (L, s, s) class activation maps in 0..1, when the worker gave them


def reading_of(reference: str, reading, image: np.ndarray, row: int = 0) -> ModelReading:
    """Row `row` of a pool's batch reading (probabilities, flags and maps of n images) for one image."""
    maps = None if reading.maps is None else np.asarray(reading.maps[row])
    return ModelReading(reference, tuple(reading.labels), np.asarray(reading.probabilities[row], dtype=np.float64),
                        np.asarray(reading.flags[row], dtype=bool), np.asarray(reading.thresholds, dtype=np.float64),
                        image, maps)


def findings(readings: Mapping[str, ModelReading]) -> list[str]:
    """Every finding any model reports, in the first model's order, others' extra labels after."""
    order: list[str] = []
    for reading in readings.values():
        order.extend(label for label in reading.labels if label not in order)
    return order


def flag_matrix(readings: Mapping[str, ModelReading]) -> pd.DataFrame:
    """Finding x model: True flagged, False not, NA where a model has no such label."""
    rows = findings(readings)
    columns = {}
    for name, reading in readings.items():
        by_label = dict(zip(reading.labels, reading.flags.tolist(), strict=True))
        columns[name] = pd.array([by_label.get(label) for label in rows], dtype="boolean")
    return pd.DataFrame(columns, index=pd.Index(rows, name="finding"))


def disagreements(readings: Mapping[str, ModelReading]) -> pd.Series:
    """Finding -> True where the models that have the label do not all flag it alike (one model never disagrees)."""
    flags = flag_matrix(readings)
    return flags.apply(lambda row: row.dropna().nunique() > 1, axis=1).astype(bool)


def probability_table(readings: Mapping[str, ModelReading]) -> pd.DataFrame:
    """Finding x model: "0.734 ⚑" (flagged) or "0.021", and an agreement column.

    Text rather than numbers so the flag travels with the number into every place the table goes (the
    page, its screenshot, a copy-paste); the agreement column says in words what the row colour shows.
    """
    rows = findings(readings)
    table: dict[str, list[str]] = {}
    for name, reading in readings.items():
        cells = {label: f"{probability:.3f}" + (f" {FLAG}" if flagged else "")
                 for label, probability, flagged in zip(reading.labels, reading.probabilities.tolist(),
                                                        reading.flags.tolist(), strict=True)}
        table[name] = [cells.get(label, "—") for label in rows]
    flags, disagree = flag_matrix(readings), disagreements(readings)
    agreement = []
    for label in rows:
        known = flags.loc[label].dropna()
        if disagree[label]:
            agreement.append(f"{DISAGREE} ({int(known.sum())} of {len(known)} flag)")
        else:
            agreement.append("all flag" if len(known) and bool(known.all()) else "")
    table[AGREEMENT] = agreement
    return pd.DataFrame(table, index=pd.Index(rows, name="finding"))


def styled_table(readings: Mapping[str, ModelReading]) -> Styler:
    """The probability table with flagged cells bold dark red and disagreeing rows on a yellow background."""
    table, flags, disagree = probability_table(readings), flag_matrix(readings), disagreements(readings)

    def css(frame: pd.DataFrame) -> pd.DataFrame:
        styles = pd.DataFrame("", index=frame.index, columns=frame.columns)
        for name in flags.columns:
            styles.loc[flags[name].fillna(False).to_numpy(dtype=bool), name] = FLAGGED_CELL
        rows = disagree.to_numpy()
        styles.loc[rows, :] = styles.loc[rows, :].map(lambda style: f"{style}; {DISAGREE_BACKGROUND}".lstrip("; "))
        return styles

    return table.style.apply(css, axis=None)


def default_finding(readings: Mapping[str, ModelReading]) -> str:
    """The finding to show maps for first: the first where the models disagree, else the most probable one."""
    disagree = disagreements(readings)
    if disagree.any():
        return str(disagree.index[disagree.to_numpy()][0])
    best: dict[str, float] = {}
    for reading in readings.values():
        for label, probability in zip(reading.labels, reading.probabilities.tolist(), strict=True):
            best[label] = max(best.get(label, 0.0), probability)
    return max(findings(readings), key=lambda label: best.get(label, 0.0))
