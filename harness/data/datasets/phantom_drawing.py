"""Drawing of the phantom's anatomy, numpy only: coordinates, body, lungs, heart, spine, ribs,
clavicles, vascular markings and the film's exposure. The 14 findings are drawn on top of it by
`phantom_findings`, which builds on the primitives here.

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

import numpy as np

DENSITY_RANGE = np.float32(1.2)  # densest anatomy (~0.75) plus the densest finding still below it
EDGE = np.float32(0.025)  # width of a soft edge, in normalized units (0.8 px at 64, 2.8 px at 224)
TWO_PI = np.float32(2 * np.pi)

Array = np.ndarray
# A (B, 1, 1) column or one number for the whole batch (0, np.float32(1)): both broadcast alike.
Value = Array | float | np.floating


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

    def take(self, index: Array | slice) -> Scene:
        """The scene of the images at `index` (any numpy index)."""
        return Scene(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def columns(self) -> Scene:
        """The same scene with every parameter as a float32 (B, 1, 1) column, ready to broadcast."""
        return Scene(
            **{f.name: np.array(getattr(self, f.name), np.float32).reshape(-1, 1, 1) for f in fields(self)}
        )


# ---------------------------------------------------------------------------------------------
# Primitives
# ---------------------------------------------------------------------------------------------


def ramp(signed_distance: Array, width: Value = EDGE) -> Array:
    """Soft indicator: 0 outside, 1 inside, linear across `width` around the border (cheaper than a sigmoid)."""
    return np.clip(0.5 + signed_distance / width, 0.0, 1.0)


def ellipse(x: Array, y: Array, cx: Value, cy: Array, a: Array, b: Array, width: Value = EDGE) -> Array:
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


def dome_base(scene: Scene, sign: Value) -> Array:
    """Costophrenic level of one side: the patient's right hemidiaphragm (image left) sits higher."""
    return scene.dome_base - np.where(sign < 0, np.float32(0.045), np.float32(0))


def lung(x: Array, y: Array, scene: Scene, sign: Value) -> Array:
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


def point_in_lung(scene: Scene, sign: Array, lateral: Value, depth: Array) -> tuple[Array, Array]:
    """A point of one lung: `lateral` 0 medial .. 1 lateral, `depth` 0 apex .. 1 base (both in [0, 1])."""
    x = sign * (scene.lung_dx + (lateral - 0.4) * scene.lung_a * 1.2)
    top = scene.lung_cy - scene.lung_b
    bottom = scene.dome_base - scene.dome_height * 0.6
    return x, top + (0.15 + 0.8 * depth) * (bottom - top)


def rotated(x: Array, y: Array, cx: Value, cy: Value, angle: Array) -> tuple[Array, Array]:
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

    def parts(self, index: Array) -> Anatomy:
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
