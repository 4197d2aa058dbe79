"""The phantom: a built-in synthetic chest X-ray data set with the 14 ChestX-ray14 labels (numpy only).

What it is
    Procedurally drawn chest-radiograph-like images (see `phantom_drawing`): body, two dark lungs,
    a bright heart toward the patient's left, spine, ribs, clavicles, diaphragm domes, vascular
    markings, per-image exposure and noise. Each patient has a persistent anatomy (body width, lung
    and heart size and position, rib spacing, rotation) reused with small jitter in all of their
    images, and persistent finding sites (a patient's nodule stays where it was). Every planted
    finding gets a bounding box in pixels.

How labels are drawn
    A Gaussian copula. For each pair of labels the tetrachoric correlation is solved from the
    reference prevalences and co-occurrence counts (reference/chestxray14_stats.json, embedded
    below so the harness needs no file), the matrix is made positive definite, and each image gets
    a latent z ~ N(0, R) thresholded at the label's target prevalence. z is the sum of a patient
    part and an image part (shares PATIENT_SHARE and 1 - PATIENT_SHARE of the variance), so a
    patient's follow-up images tend to carry the same findings, while the marginal prevalences
    and pairwise co-occurrences per image are unchanged. Labels rarer than `floor_prevalence` are
    lifted to it (so each has positives to score) and keep their latent correlations, so their
    co-occurrence grows with them (their lift over independence shrinks toward 1).
    How close: the tetrachoric matrix needs no positive-definite repair, so in expectation the
    copula reproduces every reference prevalence and pairwise co-occurrence exactly. Sampled
    (20,000 patients, ~54,000 images, floor 0): prevalences within 0.005 absolute of the
    reference (relative error up to ~10% for the rarest, Hernia), pairwise co-occurrence rates
    within 0.002 absolute; pairs expected more than 200 times are within 3% relative (median)
    and 10% (90th percentile). The number of labels per image follows the reference too
    (0/1/2/3/4 labels: 53.8/29.0/11.4/4.1/1.3% against 53.8/27.6/12.8/4.3/1.1%).

Images per patient follow the reference histogram with the long tail folded into
MAX_IMAGES_PER_PATIENT (mean 2.72 images per patient; the untruncated reference mean is 3.64).

Calibration (benchmarks/calibrate_phantom.py): with the defaults (1,500 patients, about 4,100
images at 64 x 64) ResNet-50 from scratch, Adam 1e-3, batch 32, 5 epochs reaches a test macro
AUROC of 0.835 (seed 0) and 0.847 (seed 1) in about 250 s on 2 CPU cores; shuffled training
labels give 0.486. Generating the defaults takes about 2.6 s (0.6 ms per 64 x 64 image, 6 ms per
224 x 224 image).

Deterministic: every patient draws from its own generator, SeedSequence(seed, spawn_key=(p,)),
and image i of patient p takes its noise from SeedSequence(seed, spawn_key=(p, i)), so the
result does not depend on chunking or iteration order. The same config gives byte-identical arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from numbers import Integral, Real

import numpy as np

from harness.datasets import phantom_drawing as draw

LABELS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)  # fmt: skip

# From reference/chestxray14_stats.json (NIH ChestX-ray14, 112,120 images, 30,805 patients).
REFERENCE_IMAGES = 112120
REFERENCE_LABEL_COUNT = (11559, 2776, 13317, 19894, 5782, 6331, 1431, 5302, 4667, 2303, 2516, 1686, 3385, 227)
REFERENCE_COOCCURRENCE = (
    (11559, 370, 3275, 3264, 739, 590, 262, 774, 1223, 221, 424, 220, 496, 40),
    (370, 2776, 1063, 587, 102, 108, 41, 49, 169, 127, 44, 52, 111, 7),
    (3275, 1063, 13317, 4000, 1254, 912, 269, 996, 1287, 593, 359, 188, 849, 21),
    (3264, 587, 4000, 19894, 1159, 1546, 605, 946, 1221, 981, 449, 345, 750, 33),
    (739, 102, 1254, 1159, 5782, 906, 71, 431, 610, 129, 215, 117, 452, 25),
    (590, 108, 912, 1546, 906, 6331, 70, 341, 428, 131, 115, 166, 411, 10),
    (262, 41, 269, 605, 71, 70, 1431, 41, 123, 340, 23, 11, 48, 3),
    (774, 49, 996, 946, 431, 341, 41, 5302, 223, 33, 747, 80, 289, 9),
    (1223, 169, 1287, 1221, 610, 428, 123, 223, 4667, 162, 103, 79, 251, 4),
    (221, 127, 593, 981, 129, 131, 340, 33, 162, 2303, 30, 9, 64, 3),
    (424, 44, 359, 449, 215, 115, 23, 747, 103, 30, 2516, 36, 151, 4),
    (220, 52, 188, 345, 117, 166, 11, 80, 79, 9, 36, 1686, 176, 8),
    (496, 111, 849, 750, 452, 411, 48, 289, 251, 64, 151, 176, 3385, 8),
    (40, 7, 21, 33, 25, 10, 3, 9, 4, 3, 4, 8, 8, 227),
)
# Patients with 1..10 images; the 2,225 patients with more than 10 are folded into 10.
REFERENCE_IMAGES_PER_PATIENT = (17503, 4113, 2100, 1330, 938, 787, 608, 494, 387, 320 + 2225)
MAX_IMAGES_PER_PATIENT = len(REFERENCE_IMAGES_PER_PATIENT)

STRENGTH_AT_CONSPICUITY_1 = 1.3  # calibration: the default benchmark lands near 0.83 macro AUROC
PATIENT_SHARE = 0.5  # share of the label latent's variance common to all images of a patient
CHUNK_PIXELS = 1 << 21  # pixels drawn per vectorized batch: bounds memory at any image size

_ANATOMY_VALUES = 16  # per-patient uniforms that fix the anatomy
_JITTER_VALUES = 8  # per-image normals: pose, breathing, small size changes
_EXPOSURE_VALUES = 6  # per-image uniforms: gain, offset, gamma, noise, exposure gradient


@dataclass(frozen=True)
class PhantomConfig:
    """What to generate. Defaults are calibrated (benchmarks/calibrate_phantom.py) so that a
    ResNet-50 trained from scratch on 64 x 64 images for the default epochs lands at a test macro
    AUROC of about 0.83."""

    seed: int = 0
    patients: int = 1500
    image_size: int = 64
    floor_prevalence: float = 0.05  # rarest labels lifted to this prevalence so every label has positives to score
    conspicuity: float = 1.0  # global strength of the planted findings (1.0 = calibrated)

    def __post_init__(self) -> None:
        _require_int("seed", self.seed, 0, 2**63 - 1)
        _require_int("patients", self.patients, 1, 10_000_000)
        _require_int("image_size", self.image_size, 16, 1024)
        _require_real("floor_prevalence", self.floor_prevalence, 0.0, 0.5, upper_open=True)
        _require_real("conspicuity", self.conspicuity, 0.0, 10.0, lower_open=True)


@dataclass(frozen=True)
class PhantomData:
    """A generated phantom data set; arrays are read-only."""

    pixels: np.ndarray  # uint8 (N, S, S)
    labels: np.ndarray  # uint8 (N, 14), columns in LABELS order
    patient_ids: np.ndarray  # int64 (N,)
    sample_ids: tuple[str, ...]  # "phantom_p000012_f003": patient 12, its image 3
    boxes: np.ndarray  # int32 (M, 6): sample index, label index, x, y, w, h; one per planted finding
    prevalence: dict[str, tuple[float, float]] = field(default_factory=dict)  # label -> (reference, used)


def _require_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral) or not low <= value <= high:
        raise ValueError(f"{name}: {value!r} must be an integer in [{low}, {high}]")


def _require_real(
    name: str, value: object, low: float, high: float, lower_open: bool = False, upper_open: bool = False
) -> None:
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if lower_open else value >= low) and (value < high if upper_open else value <= high)
    if not ok:
        interval = f"{'(' if lower_open else '['}{low}, {high}{')' if upper_open else ']'}"
        raise ValueError(f"{name}: {value!r} must be a number in {interval}")


# ---------------------------------------------------------------------------------------------
# Label statistics
# ---------------------------------------------------------------------------------------------


def reference_prevalence() -> np.ndarray:
    """Per-image prevalence of each label in the reference, in LABELS order."""
    return np.asarray(REFERENCE_LABEL_COUNT, np.float64) / REFERENCE_IMAGES


def target_prevalence(floor_prevalence: float) -> np.ndarray:
    """Reference prevalences with the rare ones lifted to `floor_prevalence`."""
    return np.maximum(reference_prevalence(), floor_prevalence)


def images_per_patient_distribution() -> tuple[np.ndarray, np.ndarray]:
    """(counts 1..MAX, probabilities) of the number of images a patient has."""
    counts = np.arange(1, MAX_IMAGES_PER_PATIENT + 1)
    weights = np.asarray(REFERENCE_IMAGES_PER_PATIENT, np.float64)
    return counts, weights / weights.sum()


def _normal_upper_tail(t: np.ndarray) -> np.ndarray:
    """P(Z > t) for a standard normal, elementwise (math.erfc: numpy has none, scipy is not allowed)."""
    return np.vectorize(lambda v: 0.5 * math.erfc(v / math.sqrt(2)))(np.asarray(t, np.float64))


def _normal_threshold(upper_tail: np.ndarray) -> np.ndarray:
    """t with P(Z > t) = upper_tail, by bisection (to 1e-12, plenty for 14 thresholds)."""
    low, high = np.full(np.shape(upper_tail), -10.0), np.full(np.shape(upper_tail), 10.0)
    for _ in range(70):
        middle = (low + high) / 2
        too_low = _normal_upper_tail(middle) > upper_tail
        low, high = np.where(too_low, middle, low), np.where(too_low, high, middle)
    return (low + high) / 2


_GAUSS_LEGENDRE = np.polynomial.legendre.leggauss(48)


def _joint_upper_tail(a: np.ndarray, b: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """P(X > a, Y > b) for standard bivariate normals with correlation rho (elementwise).

    Uses d/d(rho) P = bivariate density at (a, b) (Plackett), integrated from 0 by Gauss-Legendre.
    """
    nodes, weights = _GAUSS_LEGENDRE
    r = rho[..., None] * (nodes + 1) / 2
    one_minus = 1 - r**2
    density = np.exp(-(a[..., None] ** 2 - 2 * r * a[..., None] * b[..., None] + b[..., None] ** 2) / (2 * one_minus))
    density /= 2 * np.pi * np.sqrt(one_minus)
    return _normal_upper_tail(a) * _normal_upper_tail(b) + rho / 2 * (density * weights).sum(axis=-1)


@lru_cache(maxsize=1)
def latent_correlation() -> np.ndarray:
    """Positive-definite tetrachoric correlation matrix of the 14 labels, from the reference counts."""
    prevalence = reference_prevalence()
    threshold = _normal_threshold(prevalence)
    a, b = np.meshgrid(threshold, threshold, indexing="ij")
    joint = np.asarray(REFERENCE_COOCCURRENCE, np.float64) / REFERENCE_IMAGES
    low, high = np.full(a.shape, -0.95), np.full(a.shape, 0.95)
    for _ in range(50):  # P(X > a, Y > b) grows with rho: bisect all pairs at once
        middle = (low + high) / 2
        too_low = _joint_upper_tail(a, b, middle) < joint
        low, high = np.where(too_low, middle, low), np.where(too_low, high, middle)
    rho = (low + high) / 2
    rho = (rho + rho.T) / 2
    np.fill_diagonal(rho, 1.0)
    values, vectors = np.linalg.eigh(rho)  # clip to positive definite, then back to unit diagonal
    rho = vectors @ np.diag(np.maximum(values, 1e-3)) @ vectors.T
    scale = 1 / np.sqrt(np.diag(rho))
    rho = rho * scale[:, None] * scale[None, :]
    rho.setflags(write=False)
    return rho


# ---------------------------------------------------------------------------------------------
# Per-patient sampling
# ---------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """Everything drawn before rendering, one row per image."""

    patient_ids: np.ndarray
    image_numbers: np.ndarray
    labels: np.ndarray  # bool (N, 14)
    anatomy: np.ndarray  # (N, _ANATOMY_VALUES) patient uniforms, repeated per image
    jitter: np.ndarray  # (N, _JITTER_VALUES) normals
    exposure: np.ndarray  # (N, _EXPOSURE_VALUES) uniforms
    sites: np.ndarray  # (N, 14, SITE_VALUES) uniforms
    severity: np.ndarray  # (N, 14) in [0.25, 1]


def _patient_generator(seed: int, patient: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(patient,)))


def _sample_patient(rng: np.random.Generator, thresholds: np.ndarray, cholesky: np.ndarray) -> dict[str, np.ndarray]:
    """One patient's images: labels, anatomy, pose, exposure, finding sites and severities.

    Always the same sequence of draws, so a patient's data depends only on (seed, patient id).
    """
    counts, probabilities = images_per_patient_distribution()
    n = int(rng.choice(counts, p=probabilities))
    labels_count = len(LABELS)
    patient_latent = cholesky @ rng.standard_normal(labels_count)
    image_latent = rng.standard_normal((n, labels_count)) @ cholesky.T
    latent = math.sqrt(PATIENT_SHARE) * patient_latent + math.sqrt(1 - PATIENT_SHARE) * image_latent
    anatomy = rng.random(_ANATOMY_VALUES)
    sites = rng.random((labels_count, draw.SITE_VALUES))
    site_jitter = rng.normal(0, 0.04, (n, labels_count, draw.SITE_VALUES))
    site_jitter[:, :, 0] = 0  # the side of a finding persists
    patient_severity = rng.random(labels_count)
    severity = patient_severity + rng.normal(0, 0.12, (n, labels_count))
    return {
        "labels": latent > thresholds,
        "anatomy": np.broadcast_to(anatomy, (n, _ANATOMY_VALUES)),
        "jitter": rng.standard_normal((n, _JITTER_VALUES)),
        "exposure": rng.random((n, _EXPOSURE_VALUES)),
        "sites": np.clip(sites + site_jitter, 0, 1),
        "severity": 0.25 + 0.75 * np.clip(severity, 0, 1),
    }


def _sample_plan(config: PhantomConfig) -> _Plan:
    thresholds = _normal_threshold(target_prevalence(config.floor_prevalence))
    cholesky = np.linalg.cholesky(latent_correlation())
    parts = [_sample_patient(_patient_generator(config.seed, p), thresholds, cholesky) for p in range(config.patients)]
    sizes = np.array([len(part["labels"]) for part in parts])
    return _Plan(
        patient_ids=np.repeat(np.arange(config.patients, dtype=np.int64), sizes),
        image_numbers=np.concatenate([np.arange(size) for size in sizes]),
        **{name: np.concatenate([part[name] for part in parts]) for name in parts[0]},
    )


def _scene(plan: _Plan) -> draw.Scene:
    """Map the plan's uniforms and normals to anatomical parameters (normalized units)."""
    a, j, e = plan.anatomy, plan.jitter, plan.exposure
    body = 0.78 + 0.12 * a[:, 0]
    lung_cy = -0.1 + 0.08 * a[:, 4] + 0.01 * j[:, 3]
    lung_b = (0.55 + 0.1 * a[:, 3]) * (1 + 0.03 * j[:, 4])  # breathing changes the lung height
    dome_base = lung_cy + 0.42 + 0.08 * a[:, 6] + 0.02 * j[:, 4]
    dome_height = 0.09 + 0.06 * a[:, 7]
    heart_b = 0.22 + 0.05 * a[:, 9]
    return draw.Scene(
        shift_x=0.03 * j[:, 0],
        shift_y=0.03 * j[:, 1],
        rotation=0.035 * (a[:, 15] - 0.5) * 2 + 0.012 * j[:, 2],  # patient's habitual tilt + per-image
        body_half_width=body,
        lung_dx=body * (0.44 + 0.06 * a[:, 1]),
        lung_cy=lung_cy,
        lung_a=0.24 + 0.06 * a[:, 2],
        lung_b=lung_b,
        lung_air=0.33 + 0.08 * a[:, 5],
        dome_base=dome_base,
        dome_height=dome_height,
        heart_cx=0.08 + 0.08 * a[:, 8],
        heart_cy=dome_base - 0.6 * dome_height - heart_b + 0.05,  # resting on the left hemidiaphragm
        heart_a=(0.25 + 0.06 * a[:, 10]) * (1 + 0.02 * j[:, 5]),
        heart_b=heart_b,
        rib_spacing=0.15 + 0.04 * a[:, 11],
        rib_phase=a[:, 12] + 0.05 * j[:, 6],
        marking_phase=2 * np.pi * a[:, 13] + 0.1 * j[:, 7],
        marking_amount=0.05 + 0.03 * a[:, 14],
        gain=0.9 + 0.3 * e[:, 0],
        offset=-0.02 + 0.08 * e[:, 1],
        gamma=0.8 + 0.45 * e[:, 2],
        noise_sigma=0.015 + 0.02 * e[:, 3],
        gradient_x=0.08 * (e[:, 4] - 0.5),
        gradient_y=0.08 * (e[:, 5] - 0.5),
    )


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

_CARDIOMEGALY = LABELS.index("Cardiomegaly")
_EMPHYSEMA = LABELS.index("Emphysema")


def _render_chunk(
    scene: draw.Scene, plan: _Plan, rows: slice, config: PhantomConfig
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Draw the images `rows` of the plan: uint8 pixels and their finding boxes."""
    size = config.image_size
    scene = scene.take(rows).columns()
    labels, sites = plan.labels[rows], plan.sites[rows]
    strength = (config.conspicuity * STRENGTH_AT_CONSPICUITY_1 * plan.severity[rows]).astype(np.float32)

    def positives(label: int) -> np.ndarray:
        return np.flatnonzero(labels[:, label])

    for label, modify in ((_CARDIOMEGALY, draw.enlarge_heart), (_EMPHYSEMA, draw.hyperinflate)):
        index = positives(label)
        modify(scene, index, draw.column(strength[index, label]))

    x, y = draw.coordinates(scene, size)
    anatomy = draw.draw_anatomy(x, y, scene)
    density = anatomy.density
    boxes: list[np.ndarray] = []

    def record(label: int, index: np.ndarray, footprint: np.ndarray) -> None:
        found = draw.boxes_from_footprints(footprint)
        head = np.stack([index + rows.start, np.full_like(index, label)], axis=1)
        boxes.append(np.concatenate([head.astype(np.int32), found], axis=1))

    for label, name in enumerate(LABELS):
        index = positives(label)
        if len(index) == 0:
            continue
        if label == _CARDIOMEGALY:
            record(label, index, draw.cardiomegaly_footprint(anatomy)[index])
        elif label == _EMPHYSEMA:
            record(label, index, draw.emphysema_footprint(anatomy)[index])
        else:
            site = sites[index, label].astype(np.float32)[:, :, None, None]
            finding = draw.OPACITY_DRAWERS[name](
                x[index], y[index], scene.take(index), anatomy.parts(index), site, draw.column(strength[index, label])
            )
            density[index] += finding.density
            record(label, index, finding.footprint)

    image = draw.expose(density, scene) + draw.exposure_gradient(x, y, scene)
    image += scene.noise_sigma * _noise(plan, rows, config)
    return np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8), boxes


def _noise(plan: _Plan, rows: slice, config: PhantomConfig) -> np.ndarray:
    """White noise of each image from its own (patient, image) stream."""
    size = config.image_size
    noise = np.empty((rows.stop - rows.start, size, size), np.float32)
    for k, (patient, number) in enumerate(zip(plan.patient_ids[rows], plan.image_numbers[rows])):
        seed = np.random.SeedSequence(config.seed, spawn_key=(int(patient), int(number)))
        noise[k] = np.random.default_rng(seed).standard_normal((size, size), dtype=np.float32)
    return noise


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def generate_phantom(config: PhantomConfig) -> PhantomData:
    """Generate the phantom data set described by `config` (deterministic in the config)."""
    plan = _sample_plan(config)
    scene = _scene(plan)
    count, size = len(plan.patient_ids), config.image_size
    pixels = np.empty((count, size, size), np.uint8)
    boxes: list[np.ndarray] = [np.zeros((0, 6), np.int32)]
    step = max(1, CHUNK_PIXELS // (size * size))
    for start in range(0, count, step):
        rows = slice(start, min(start + step, count))
        pixels[rows], chunk_boxes = _render_chunk(scene, plan, rows, config)
        boxes.extend(chunk_boxes)
    all_boxes = np.concatenate(boxes)
    all_boxes = all_boxes[np.lexsort((all_boxes[:, 1], all_boxes[:, 0]))]
    reference, used = reference_prevalence(), target_prevalence(config.floor_prevalence)
    return PhantomData(
        pixels=_read_only(pixels),
        labels=_read_only(plan.labels.astype(np.uint8)),
        patient_ids=_read_only(plan.patient_ids),
        sample_ids=tuple(f"phantom_p{p:06d}_f{i:03d}" for p, i in zip(plan.patient_ids, plan.image_numbers)),
        boxes=_read_only(np.ascontiguousarray(all_boxes, dtype=np.int32)),
        prevalence={name: (float(reference[k]), float(used[k])) for k, name in enumerate(LABELS)},
    )
