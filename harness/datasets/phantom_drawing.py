"""Drawing of the phantom chest radiographs: anatomy and the 14 findings, numpy only.

Everything is drawn as a *density* map (higher = more attenuating = brighter on the film) in
normalized anatomical coordinates: x and y run from -1 to 1 across the image, x to the image's
right, y downwards. The patient faces the viewer as in a PA film, so the patient's left (heart,
lower hemidiaphragm) is on the image's right. Geometry never mentions pixels, which makes the
drawing independent of the resolution it is sampled at; edges are soft ramps of a fixed
normalized width, so small images are anti-aliased rather than jagged.

All functions work on a batch: coordinate grids have shape (B, S, S) and every scene parameter is
a (B, 1, 1) float32 column, so one numpy expression draws a whole batch at once.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

import numpy as np

DENSITY_RANGE = np.float32(1.2)  # densest anatomy (~0.75) plus the densest finding still below it
EDGE = np.float32(0.025)  # width of a soft edge, in normalized units (0.8 px at 64, 2.8 px at 224)
SITE_VALUES = 4  # uniform numbers per finding that place and shape it (side, position, size, angle)
TWO_PI = np.float32(2 * np.pi)

Array = np.ndarray


@dataclass
class Scene:
    """Per-image parameters of a batch, each a float32 array of shape (B, 1, 1) once `columns()`."""

    shift_x: Array
    shift_y: Array
    rotation: Array
    body_half_width: Array
    lung_dx: Array  # distance of each lung's centre from the midline
    lung_cy: Array
    lung_a: Array  # lung half-width
    lung_b: Array  # lung half-height
    lung_air: Array  # how much darker aerated lung is than soft tissue
    dome_base: Array  # y of the costophrenic angles (left hemidiaphragm of the patient)
    dome_height: Array
    heart_cx: Array
    heart_cy: Array
    heart_a: Array
    heart_b: Array
    rib_spacing: Array
    rib_phase: Array
    marking_phase: Array
    marking_amount: Array
    gain: Array
    offset: Array
    gamma: Array
    noise_sigma: Array
    gradient_x: Array
    gradient_y: Array

    def take(self, index: Array) -> "Scene":
        """The scene of the images at `index` (any numpy index)."""
        return Scene(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def columns(self) -> "Scene":
        """The same scene with every parameter as a float32 (B, 1, 1) column, ready to broadcast."""
        return Scene(
            **{f.name: np.array(getattr(self, f.name), np.float32).reshape(-1, 1, 1) for f in fields(self)}
        )


@dataclass
class Finding:
    """What one finding drawer returns for the B images that have it."""

    density: Array  # (B, S, S) added to the density map
    footprint: Array  # (B, S, S) in [0, 1]; the box is drawn around footprint > 0.5


# ---------------------------------------------------------------------------------------------
# Primitives
# ---------------------------------------------------------------------------------------------


def ramp(signed_distance: Array, width: Array | float = EDGE) -> Array:
    """Soft indicator: 0 outside, 1 inside, linear across `width` around the border (cheaper than a sigmoid)."""
    return np.clip(0.5 + signed_distance / width, 0.0, 1.0)


def ellipse(x: Array, y: Array, cx: Array, cy: Array, a: Array, b: Array, width: Array | float = EDGE) -> Array:
    """Soft mask of an axis-aligned ellipse; the signed distance is approximated by (1 - r) * min(a, b)."""
    r = np.sqrt(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2)
    return ramp((1 - r) * np.minimum(a, b), width)


def column(values: Array) -> Array:
    """(B,) -> float32 (B, 1, 1) so a per-image value broadcasts over the pixels."""
    return np.asarray(values, np.float32).reshape(-1, 1, 1)


def coordinates(scene: Scene, size: int) -> tuple[Array, Array]:
    """Anatomical coordinates of every pixel centre, after the image's shift and small rotation."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) * np.float32(2 / size) - 1
    u = axis[None, None, :] - scene.shift_x
    v = axis[None, :, None] - scene.shift_y
    cos, sin = np.cos(scene.rotation), np.sin(scene.rotation)
    return cos * u + sin * v, cos * v - sin * u


def side_sign(site: Array) -> Array:
    """-1 for the image's left lung (patient's right), +1 for the image's right lung."""
    return np.where(site < 0.5, np.float32(-1), np.float32(1))


def dome_base(scene: Scene, sign: Array) -> Array:
    """Costophrenic level of one side: the patient's right hemidiaphragm (image left) sits higher."""
    return scene.dome_base - np.where(sign < 0, np.float32(0.045), np.float32(0))


def lung(x: Array, y: Array, scene: Scene, sign: Array) -> Array:
    """Soft mask of one lung: an ellipse cut from below by its diaphragm dome.

    The dome is highest at the lung's centre and meets the ellipse's lateral side at an acute angle:
    that corner is the costophrenic angle that effusions blunt.
    """
    cx = sign * scene.lung_dx
    lateral = np.clip((x - cx) / scene.lung_a, -1, 1)
    dome = dome_base(scene, sign) - scene.dome_height * (1 - lateral**2)
    return ellipse(x, y, cx, scene.lung_cy, scene.lung_a, scene.lung_b) * ramp(dome - y)


def heart(x: Array, y: Array, scene: Scene) -> Array:
    """Soft mask of the cardiac silhouette, displaced toward the patient's left (image right)."""
    return ellipse(x, y, scene.heart_cx, scene.heart_cy, scene.heart_a, scene.heart_b)


def point_in_lung(scene: Scene, sign: Array, lateral: Array, depth: Array) -> tuple[Array, Array]:
    """A point of one lung: `lateral` 0 medial .. 1 lateral, `depth` 0 apex .. 1 base (both in [0, 1])."""
    x = sign * (scene.lung_dx + (lateral - 0.4) * scene.lung_a * 1.2)
    top = scene.lung_cy - scene.lung_b
    bottom = scene.dome_base - scene.dome_height * 0.6
    return x, top + (0.15 + 0.8 * depth) * (bottom - top)


def rotated(x: Array, y: Array, cx: Array, cy: Array, angle: Array) -> tuple[Array, Array]:
    """Coordinates along and across a direction `angle` through (cx, cy)."""
    cos, sin = np.cos(angle), np.sin(angle)
    dx, dy = x - cx, y - cy
    return cos * dx + sin * dy, cos * dy - sin * dx


# ---------------------------------------------------------------------------------------------
# Anatomy
# ---------------------------------------------------------------------------------------------


@dataclass
class Anatomy:
    """The drawn anatomy of a batch: its density and the parts findings need to see."""

    density: Array
    lungs: Array  # union of both lung masks (heart excluded)
    markings: Array  # the vascular markings already added to `density`
    heart: Array

    def parts(self, index: Array) -> "Anatomy":
        """The parts findings read (lungs, markings, heart) of the images at `index`; no density."""
        return Anatomy(np.empty(0, np.float32), self.lungs[index], self.markings[index], self.heart[index])


def draw_anatomy(x: Array, y: Array, scene: Scene) -> Anatomy:
    """Body, lungs, heart, mediastinum, spine, ribs, clavicles and lung markings of a batch."""
    across, down = (x / scene.body_half_width) ** 2, ((y - 0.12) / np.float32(1.15)) ** 2
    body = ramp((1 - (across * across + down * down)) * 0.25)  # squared squares: ** 4 is slow in numpy
    heart_mask = heart(x, y, scene)
    both = lung(x, y, scene, np.float32(-1)) + lung(x, y, scene, np.float32(1))
    lungs = both * (1 - heart_mask)  # the heart hides the lung behind it
    markings = lung_markings(x, y, scene) * lungs
    density = 0.45 * body - scene.lung_air * lungs + 0.06 * heart_mask + markings
    density += spine(x, y) * body
    density += 0.085 * ribs(x, y, scene) + 0.09 * clavicles(x, y, scene)
    return Anatomy(density=density, lungs=lungs, markings=markings, heart=heart_mask)


def spine(x: Array, y: Array) -> Array:
    """Bright midline band with a vertebral rhythm."""
    vertebrae = 0.8 + 0.2 * np.cos(TWO_PI * y / np.float32(0.13))
    return 0.13 * ramp(0.075 - np.abs(x)) * vertebrae


def ribs(x: Array, y: Array, scene: Scene) -> Array:
    """Posterior ribs: bands that slope down laterally, repeated every `rib_spacing` over the thorax."""
    thorax = ellipse(x, y, 0, scene.lung_cy, scene.lung_dx + scene.lung_a + 0.05, scene.lung_b + 0.05)
    phase = (y - 0.45 * (np.abs(x) - 0.05) ** 2) / scene.rib_spacing + scene.rib_phase
    above_abdomen = ramp(scene.dome_base + 0.04 - y, 0.1)
    return ramp(np.cos(TWO_PI * phase) - 0.55, 0.35) * thorax * above_abdomen * ramp(np.abs(x) - 0.09)


def clavicles(x: Array, y: Array, scene: Scene) -> Array:
    """Two oblique bars across the lung apices."""
    level = scene.lung_cy - scene.lung_b + 0.05 + 0.2 * (np.abs(x) - 0.08)
    return ramp(0.03 - np.abs(y - level)) * ramp(np.abs(x) - 0.07) * ramp(0.62 - np.abs(x))


def lung_markings(x: Array, y: Array, scene: Scene) -> Array:
    """Vessels fanning out from each hilum, fading toward the periphery."""
    dx = x - np.sign(x) * 0.16
    dy = y - (scene.lung_cy + 0.08)
    radius = np.sqrt(dx**2 + dy**2)
    angle = np.arctan2(dy, np.abs(dx))
    streaks = ramp(np.cos(11 * angle + 4 * radius + scene.marking_phase) - 0.55, 0.3)
    return scene.marking_amount * streaks * np.exp(-radius / 0.5)


def expose(density: Array, scene: Scene) -> Array:
    """Film response: per-image gain, offset, gamma and a slight exposure gradient (no noise)."""
    response = (np.clip(density, 0, DENSITY_RANGE) / DENSITY_RANGE) ** scene.gamma
    return scene.offset + scene.gain * response


def exposure_gradient(x: Array, y: Array, scene: Scene) -> Array:
    """Uneven exposure across the film (heel effect, patient thickness)."""
    return scene.gradient_x * x + scene.gradient_y * y


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
    rows, cols = inside.any(axis=2), inside.any(axis=1)
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
