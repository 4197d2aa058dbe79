"""The phantom's 14 findings, numpy only: how each is drawn, its footprint and its bounding box.

Cardiomegaly and Emphysema change the anatomy itself (`enlarge_heart`, `hyperinflate` edit the
scene before the anatomy is drawn; their footprints are the heart and the lungs). The other twelve
add an opacity (or lucency) to the density map drawn by `phantom_drawing`, in the same
normalized coordinates and batch layout (see there), and each returns its footprint, around which
`boxes_from_footprints` draws the finding's box in pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.data.datasets.phantom_drawing import (
    EDGE,
    TWO_PI,
    Anatomy,
    Array,
    Scene,
    dome_base,
    ellipse,
    lung,
    point_in_lung,
    ramp,
    rotated,
    side_sign,
)  # fmt: skip

SITE_VALUES = 4  # uniform numbers per finding that place and shape it (side, position, size, angle)


@dataclass
class Finding:
    """What one finding drawer returns for the B images that have it."""

    density: Array  # (B, S, S) added to the density map
    footprint: Array  # (B, S, S) in [0, 1]; the box is drawn around footprint > 0.5


# ---------------------------------------------------------------------------------------------
# Anatomy modifiers: findings that change the anatomy itself rather than adding an opacity
# ---------------------------------------------------------------------------------------------


def enlarge_heart(scene: Scene, index: Array, strength: Array) -> None:
    """Cardiomegaly: a wider (and slightly taller) heart, in place on `scene`."""
    scene.heart_a[index] *= 1 + 0.4 * strength
    scene.heart_b[index] *= 1 + 0.12 * strength


def hyperinflate(scene: Scene, index: Array, strength: Array) -> None:
    """Emphysema: darker lungs with fewer markings, a low and flat diaphragm, in place on `scene`."""
    scene.lung_air[index] *= 1 + 0.15 * strength
    scene.marking_amount[index] *= np.clip(1 - 0.5 * strength, 0, 1)
    scene.dome_height[index] *= np.clip(1 - 0.6 * strength, 0.05, 1)
    scene.dome_base[index] += 0.05 * strength
    scene.lung_b[index] *= 1 + 0.06 * strength


# ---------------------------------------------------------------------------------------------
# Findings that add an opacity (or lucency). Each takes coordinates, the scene and anatomy of the
# images that have the finding, their site numbers (B, SITE_VALUES, 1, 1) and strength (B, 1, 1).
# ---------------------------------------------------------------------------------------------

FindingDrawer = Callable[[Array, Array, Scene, Anatomy, Array, Array], Finding]


def atelectasis(x: Array, y: Array, scene: Scene, anatomy: Anatomy, site: Array, strength: Array) -> Finding:
    """Plate-like (linear) opacity in a lower zone with a small wedge of volume loss at its end."""
    sign = side_sign(site[:, 0])
    cx, cy = point_in_lung(scene, sign, 0.3 + 0.5 * site[:, 1], 0.55 + 0.35 * site[:, 2])
    along, across = rotated(x, y, cx, cy, (site[:, 3] - 0.5) * 0.7)
    half_length = 0.14 + 0.06 * site[:, 2]
    thickness = 0.03 + 0.04 * ramp(along / half_length, 1.0)  # thicker toward one end: a wedge
    plate = ramp(thickness - np.abs(across)) * ramp(half_length - np.abs(along))
    footprint = plate * ramp(anatomy.lungs - 0.3, 0.4)
    return Finding(0.26 * strength * footprint, footprint)


def effusion(x: Array, y: Array, scene: Scene, anatomy: Anatomy, site: Array, strength: Array) -> Finding:
    """Fluid at a lung base whose meniscus climbs laterally, filling the costophrenic angle."""
    sign = side_sign(site[:, 0])
    lateral = np.clip(sign * (x - sign * scene.lung_dx) / scene.lung_a, -1, 1)
    height = (0.06 + 0.14 * site[:, 1]) * (0.7 + 0.3 * np.minimum(strength, 1.5))
    dome_top = dome_base(scene, sign) - scene.dome_height
    meniscus = dome_top - height * (0.6 + 0.4 * lateral)  # lateral = 1 at the chest wall
    fluid = ramp(y - meniscus, 2 * EDGE) * lung(x, y, scene, sign) * (1 - anatomy.heart)
    return Finding(0.34 * strength * fluid, fluid)


def infiltration(x: Array, y: Array, scene: Scene, anatomy: Anatomy, site: Array, strength: Array) -> Finding:
    """Ill-defined patchy opacities: a loose cluster of soft blobs with a fine mottled texture."""
    sign = side_sign(site[:, 0])
    cx, cy = point_in_lung(scene, sign, 0.25 + 0.5 * site[:, 1], 0.2 + 0.6 * site[:, 2])
    turn = TWO_PI * site[:, 3]
    patches = np.zeros_like(x)
    for dx, dy in ((0.0, 0.0), (0.11, 0.02), (-0.06, 0.1), (-0.04, -0.11), (0.09, 0.12)):
        px = cx + np.cos(turn) * dx - np.sin(turn) * dy
        py = cy + np.sin(turn) * dx + np.cos(turn) * dy
        patches = np.maximum(patches, np.exp(-((x - px) ** 2 + (y - py) ** 2) / np.float32(2 * 0.055**2)))
    mottle = 0.7 + 0.3 * np.cos(TWO_PI * x / np.float32(0.11)) * np.cos(TWO_PI * y / np.float32(0.09))
    inside = ramp(anatomy.lungs - 0.3, 0.4)
    return Finding(0.26 * strength * patches * mottle * inside, ramp(patches - 0.35, 0.1) * inside)


def round_opacity(x: Array, y: Array, scene: Scene, site: Array, radius: Array) -> Array:
    """A sharp-edged disc inside a lung, placed by the site numbers."""
    sign = side_sign(site[:, 0])
    cx, cy = point_in_lung(scene, sign, 0.15 + 0.7 * site[:, 1], 0.1 + 0.8 * site[:, 3])
    return ellipse(x, y, cx, cy, radius, radius, np.float32(0.6) * EDGE)


def mass(x: Array, y: Array, scene: Scene, anatomy: Anatomy, site: Array, strength: Array) -> Finding:
    """A large round opacity (radius 0.09 to 0.15)."""
    disc = round_opacity(x, y, scene, site, 0.1 + 0.06 * site[:, 2])
    return Finding(0.38 * strength * disc, disc)


def nodule(x: Array, y: Array, scene: Scene, anatomy: Anatomy, site: Array, strength: Array) -> Finding:
    """A small round opacity (radius 0.045 to 0.065): dense, since it is small."""
    disc = round_opacity(x, y, scene, site, 0.055 + 0.02 * site[:, 2])
    return Finding(0.5 * strength * disc, disc)


def pneumonia(x: Array, y: Array, scene: Scene, anatomy: Anatomy, site: Array, strength: Array) -> Finding:
    """A broad, soft-edged lower/mid-zone opacity with a coarse mottled texture."""
    sign = side_sign(site[:, 0])
    cx, cy = point_in_lung(scene, sign, 0.3 + 0.4 * site[:, 1], 0.45 + 0.45 * site[:, 2])
    spread = 0.11 + 0.05 * site[:, 3]
    cloud = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * spread**2))
    mottle = 0.72 + 0.28 * np.cos(TWO_PI * (x + y) / np.float32(0.13)) * np.cos(TWO_PI * (x - y) / np.float32(0.15))
    inside = ramp(anatomy.lungs - 0.3, 0.4)
    return Finding(0.3 * strength * cloud * mottle * inside, ramp(cloud - 0.4, 0.1) * inside)


def pneumothorax(x: Array, y: Array, scene: Scene, anatomy: Anatomy, site: Array, strength: Array) -> Finding:
    """Air around a collapsed apex: a dark rim without markings, bounded by a thin pleural line."""
    sign = side_sign(site[:, 0])
    cx = sign * scene.lung_dx
    collapse = (0.16 + 0.12 * site[:, 1]) * (0.6 + 0.4 * np.minimum(strength, 1.5))
    a, b = scene.lung_a * (1 - collapse), scene.lung_b * (1 - collapse)
    ccx = cx - sign * collapse * scene.lung_a * 0.4  # the lung falls back toward the hilum
    ccy = scene.lung_cy + collapse * scene.lung_b * 0.9
    r = np.sqrt(((x - ccx) / a) ** 2 + ((y - ccy) / b) ** 2)
    upper = ramp(scene.lung_cy + 0.25 * scene.lung_b - y, 0.1)
    rim = lung(x, y, scene, sign) * ramp((r - 1) * b) * upper
    pleural_line = ramp(0.012 - np.abs(r - 1) * b, 0.02) * upper * lung(x, y, scene, sign)
    density = -rim * (anatomy.markings + 0.1 * strength) + 0.14 * strength * pleural_line
    return Finding(density, rim)


def consolidation(x: Array, y: Array, scene: Scene, anatomy: Anatomy, site: Array, strength: Array) -> Finding:
    """Homogeneous dense opacity filling a lobar segment, sharply bounded above by a fissure."""
    sign = side_sign(site[:, 0])
    cx, cy = point_in_lung(scene, sign, 0.5, 0.25 + 0.4 * site[:, 1])
    fissure = cy + (site[:, 2] - 0.5) * 0.5 * sign * (x - cx)
    depth = 0.2 + 0.12 * site[:, 3]
    segment = ramp(y - fissure, 0.6 * EDGE) * ramp(fissure + depth - y, 3 * EDGE)
    region = segment * lung(x, y, scene, sign) * (1 - anatomy.heart)
    return Finding(0.22 * strength * region, region)


def edema(x: Array, y: Array, scene: Scene, anatomy: Anatomy, site: Array, strength: Array) -> Finding:
    """Bilateral perihilar ("bat-wing") haze."""
    spread_x, spread_y = 0.13 + 0.05 * site[:, 1], 0.17 + 0.06 * site[:, 2]
    hilum_y = scene.lung_cy + 0.05
    haze = np.exp(-((np.abs(x) - 0.22) ** 2) / (2 * spread_x**2) - (y - hilum_y) ** 2 / (2 * spread_y**2))
    inside = ramp(anatomy.lungs - 0.3, 0.4)
    return Finding(0.12 * strength * haze * inside, ramp(haze - 0.4, 0.1) * inside)


def fibrosis(x: Array, y: Array, scene: Scene, anatomy: Anatomy, site: Array, strength: Array) -> Finding:
    """Reticular network of fine lines in the peripheral lower zones of both lungs."""
    along, across = rotated(x, y, 0, 0, (site[:, 1] - 0.5) * 0.8)
    period = np.float32(0.1)
    net = np.maximum(np.cos(TWO_PI * along / period), np.cos(TWO_PI * across / period))
    lines = ramp(net - 0.6, 0.5)
    peripheral = ramp(np.abs(x) - scene.lung_dx + 0.02 * site[:, 2], 0.15)
    lower = ramp(y - scene.lung_cy + 0.15, 0.2)
    zone = peripheral * lower * ramp(anatomy.lungs - 0.3, 0.4)
    return Finding(0.15 * strength * lines * zone, zone)


def pleural_thickening(x: Array, y: Array, scene: Scene, anatomy: Anatomy, site: Array, strength: Array) -> Finding:
    """A bright band along the lateral chest wall inside one lung's border."""
    sign = side_sign(site[:, 0])
    cx = sign * scene.lung_dx
    # Pleural plaques: a lobulated band, denser than soft tissue (often calcified).
    thickness = (0.07 + 0.03 * site[:, 1]) * (0.65 + 0.35 * np.cos(TWO_PI * y / np.float32(0.14) + 6 * site[:, 3]))
    inner = ellipse(x, y, cx, scene.lung_cy, scene.lung_a - thickness, scene.lung_b - thickness)
    top = scene.lung_cy - scene.lung_b * (0.7 - 0.5 * site[:, 2])
    span = ramp(y - top, 0.05) * ramp(top + 0.45 + 0.2 * site[:, 3] - y, 0.05)
    lateral = ramp(sign * (x - cx), 0.05)
    band = lung(x, y, scene, sign) * (1 - inner) * span * lateral
    return Finding(0.55 * strength * band, band)


def hernia(x: Array, y: Array, scene: Scene, anatomy: Anatomy, site: Array, strength: Array) -> Finding:
    """Hiatal hernia: a round sac behind the heart just above the diaphragm, gas above a fluid level."""
    cx = scene.heart_cx - 0.06 + 0.12 * site[:, 1]
    cy = scene.dome_base - scene.dome_height - 0.06
    a, b = 0.12 + 0.05 * site[:, 2], 0.09 + 0.03 * site[:, 3]
    sac = ellipse(x, y, cx, cy, a, b)
    wall = ellipse(x, y, cx, cy, a - 0.025, b - 0.025)
    gas = wall * ramp(cy + 0.2 * b - y, 0.5 * EDGE)  # air-fluid level: a sharp horizontal line
    return Finding(strength * (0.25 * sac - 0.35 * gas), sac)


def cardiomegaly_footprint(anatomy: Anatomy) -> Array:
    """The (already enlarged) heart is the finding."""
    return anatomy.heart


def emphysema_footprint(anatomy: Anatomy) -> Array:
    """Both (already hyperinflated) lungs are the finding."""
    return ramp(anatomy.lungs - 0.3, 0.4)


# Opacity drawers by label name; Cardiomegaly and Emphysema are anatomy modifiers (see above).
OPACITY_DRAWERS: dict[str, FindingDrawer] = {
    "Atelectasis": atelectasis,
    "Effusion": effusion,
    "Infiltration": infiltration,
    "Mass": mass,
    "Nodule": nodule,
    "Pneumonia": pneumonia,
    "Pneumothorax": pneumothorax,
    "Consolidation": consolidation,
    "Edema": edema,
    "Fibrosis": fibrosis,
    "Pleural_Thickening": pleural_thickening,
    "Hernia": hernia,
}


def boxes_from_footprints(footprint: Array) -> Array:
    """(B, S, S) soft masks -> (B, 4) int32 boxes x, y, w, h around footprint > 0.5.

    A finding too small to pass 0.5 anywhere (a tiny nodule at 16 px) gets the 1 x 1 box of its
    strongest pixel, so every planted finding has a box.
    """
    count, size = footprint.shape[0], footprint.shape[-1]
    inside = footprint > 0.5
    # asarray (no copy): to mypy an axis reduction may be a numpy scalar; here both are (B, S) arrays.
    rows, cols = np.asarray(inside.any(axis=2)), np.asarray(inside.any(axis=1))
    y0 = rows.argmax(axis=1)
    y1 = size - 1 - rows[:, ::-1].argmax(axis=1)
    x0 = cols.argmax(axis=1)
    x1 = size - 1 - cols[:, ::-1].argmax(axis=1)
    empty = ~rows.any(axis=1)
    if empty.any():
        peak = footprint[empty].reshape(int(empty.sum()), -1).argmax(axis=1)
        y0[empty], x0[empty] = np.divmod(peak, size)
        y1[empty], x1[empty] = y0[empty], x0[empty]
    return np.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], axis=1).astype(np.int32).reshape(count, 4)
