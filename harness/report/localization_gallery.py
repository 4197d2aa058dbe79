"""The localisation gallery: the same test images, each worker's class activation map beside the others.

One line per finding with its gallery images side by side, each as the plain image then one panel
per worker. Every map is drawn the
same way: upsampled and min-max normalised by harness.evaluation.cams (the rule scoring uses), then
overlaid on the radiograph with one colour scale; the true boxes are outlined, and a cross marks the
map's maximum (the pointing game's point).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.patches import Rectangle

from harness.evaluation.cams import normalise, pointing_location, upsample
from harness.report.plots import _figure, _png

BOX_COLOUR = "#00E000"
MAX_ROWS = 14  # findings shown (ChestX-ray14 has 14; NIH boxes 8)
PANEL_IN = 1.45  # inches per image panel


@dataclass(frozen=True)
class GalleryRow:
    """One image and finding: the pixels, the finding's true boxes (K, 4: x, y, w, h), and per worker
    the raw map (h, w) at feature resolution (None where that worker has none for this image)."""

    finding: str
    sample_id: str
    pixels: np.ndarray
    boxes: np.ndarray
    maps: dict[str, np.ndarray | None]


def _panel(axes, pixels: np.ndarray, boxes: np.ndarray, cam: np.ndarray | None, title: str) -> None:
    size = pixels.shape[0]
    axes.imshow(pixels, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    if cam is not None:
        heat = normalise(upsample(cam[None], size))[0]
        axes.imshow(heat, cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0, interpolation="nearest")
        y, x = pointing_location(heat)
        axes.plot([x], [y], marker="x", color="white", markersize=7, markeredgewidth=2)
    for x, y, w, h in boxes:
        # Pixel (x, y) is centred on (x, y) in imshow's coordinates: a box covering pixels x..x+w-1 has
        # its outline from x - 0.5 to x + w - 0.5.
        axes.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor=BOX_COLOUR, linewidth=1.5))
    axes.set_title(title, fontsize=8)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.grid(False)


def gallery_chart(rows: Sequence[GalleryRow], workers: Sequence[str]) -> bytes:
    """The gallery as PNG bytes: one line per finding, its images side by side, each as the plain image
    then one panel per worker."""
    by_finding: dict[str, list[GalleryRow]] = {}
    for row in rows:
        by_finding.setdefault(row.finding, []).append(row)
    lines = list(by_finding.values())[:MAX_ROWS]
    per_line = max(len(line) for line in lines)
    columns = per_line * (1 + len(workers))
    panel = min(PANEL_IN, 10.6 / columns)
    with _figure(panel * 1.12 * len(lines) + 0.5, "Class activation maps on the same test images") as figure:
        figure.set_size_inches(max(6.0, panel * columns + 0.4), panel * 1.12 * len(lines) + 0.5)
        grid = figure.subplots(len(lines), columns, squeeze=False)
        for r, line in enumerate(lines):
            for k in range(per_line):
                cells = grid[r][k * (1 + len(workers)):(k + 1) * (1 + len(workers))]
                if k >= len(line):
                    for axes in cells:
                        axes.set_axis_off()
                    continue
                row = line[k]
                _panel(cells[0], row.pixels, row.boxes, None, f"{row.finding}\n{row.sample_id}")
                for axes, worker in zip(cells[1:], workers, strict=True):
                    cam = row.maps.get(worker)
                    _panel(axes, row.pixels, row.boxes, cam, worker if cam is not None else f"{worker}: no map")
        return _png(figure)
