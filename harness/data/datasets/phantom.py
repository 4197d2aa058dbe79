"""The phantom: a built-in synthetic chest X-ray data set with the 14 ChestX-ray14 labels (numpy only).

One job: turn a PhantomConfig into PhantomData. It plans every patient's images (labels from
`phantom_labels`, anatomy, pose, exposure, finding sites and severities), maps the plan to scene
parameters and renders the images in chunks with `phantom_drawing` (anatomy) and
`phantom_findings` (the 14 findings and their boxes).

What it is
    Procedurally drawn chest-radiograph-like images: body, two dark lungs, a bright heart toward
    the patient's left, spine, ribs, clavicles, diaphragm domes, vascular markings, per-image
    exposure and noise. Each patient has a persistent anatomy (body width, lung and heart size and
    position, rib spacing, rotation) reused with small jitter in all of their images, and
    persistent finding sites (a patient's nodule stays where it was). Every planted finding gets a
    bounding box in pixels. Labels follow the ChestX-ray14 prevalences and co-occurrences through
    a Gaussian copula, correlated within a patient (see `phantom_labels`).

Calibration (benchmarks/calibrate_phantom.py): the defaults (1,000 patients, about 2,660 images,
findings at conspicuity 2.5) are sized so that the default benchmark, three training seeds for each
of four workers, fits in minutes on 2 CPU cores. In plain PyTorch (no augmentation, last epoch),
ResNet-50 from scratch at 48 x 48, Adam 3e-4, batch 32, reaches a test macro AUROC of about 0.80
after 2 epochs (seed 0; 0.83 for seed 1; about 25 s per epoch) with a validation loss that falls
every epoch, and 0.50 with shuffled labels; the harness's default run lands at 0.746-0.776 per
framework and its shuffled control at 0.46. Issue 14's defaults (conspicuity 2.0, 3 epochs) took a
third more time for the same AUROC, and their shuffled control sat at 0.44. At the earlier defaults
(1,500 patients, conspicuity 1.0, 64 x 64, Adam 1e-3, 5 epochs: 0.835) the validation loss spiked
from epoch to epoch and drove the checkpoint choice; at Adam 1e-4 and conspicuity 1.0 the network
learned too little in the time (0.63 after 5 epochs). Generating the defaults takes about 2 s (0.6
ms per 64 x 64 image, 6 ms per 224 x 224 image).

Deterministic: every patient draws from its own generator, SeedSequence(seed, spawn_key=(p,)),
and image i of patient p takes its noise from SeedSequence(seed, spawn_key=(p, i)), so the
result does not depend on chunking or iteration order. The same config gives byte-identical arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import cast

import numpy as np

from harness.data.datasets import phantom_drawing as draw
from harness.data.datasets import phantom_findings as findings
from harness.data.datasets.labels import CHESTXRAY14_LABELS

# Re-exported: the label statistics are part of the phantom's API (tests and callers read them here).
from harness.data.datasets.phantom_labels import (  # noqa: F401
    MAX_IMAGES_PER_PATIENT,
    PATIENT_SHARE,
    REFERENCE_COOCCURRENCE,
    REFERENCE_IMAGES,
    REFERENCE_IMAGES_PER_PATIENT,
    REFERENCE_LABEL_COUNT,
    images_per_patient_distribution,
    latent_correlation,
    latent_thresholds,
    reference_prevalence,
    sample_labels,
    target_prevalence,
)  # fmt: skip

LABELS = CHESTXRAY14_LABELS

STRENGTH_AT_CONSPICUITY_1 = 1.3  # calibration: the default benchmark lands near 0.83 macro AUROC
CHUNK_PIXELS = 1 << 21  # pixels drawn per vectorized batch: bounds memory at any image size

_ANATOMY_VALUES = 16  # per-patient uniforms that fix the anatomy
_JITTER_VALUES = 8  # per-image normals: pose, breathing, small size changes
_EXPOSURE_VALUES = 6  # per-image uniforms: gain, offset, gamma, noise, exposure gradient


@dataclass(frozen=True)
class PhantomConfig:
    """What to generate. Defaults are calibrated (benchmarks/calibrate_phantom.py) so that a
    ResNet-50 trained from scratch on 48 x 48 images for the default epochs lands at a test macro
    AUROC of about 0.8."""

    seed: int = 0
    patients: int = 1000
    image_size: int = 48
    floor_prevalence: float = 0.05  # rarest labels lifted to this prevalence so every label has positives to score
    conspicuity: float = 2.5  # global strength of the planted findings (the default benchmark's calibration)

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
    # cast: numbers.Integral declares no >= to mypy (typeshed); an Integral compares as the int it is.
    if isinstance(value, bool) or not isinstance(value, Integral) or not low <= cast(int, value) <= high:
        raise ValueError(f"{name}: {value!r} must be an integer in [{low}, {high}]")


def _require_real(
    name: str, value: object, low: float, high: float, lower_open: bool = False, upper_open: bool = False
) -> None:
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        # cast: numbers.Real declares only < and <= to mypy (typeshed); a finite Real compares as a float does.
        number = cast(float, value)
        ok = (number > low if lower_open else number >= low) and (number < high if upper_open else number <= high)
    if not ok:
        interval = f"{'(' if lower_open else '['}{low}, {high}{')' if upper_open else ']'}"
        raise ValueError(f"{name}: {value!r} must be a number in {interval}")


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
    labels = sample_labels(rng, n, thresholds, cholesky)
    anatomy = rng.random(_ANATOMY_VALUES)
    sites = rng.random((labels_count, findings.SITE_VALUES))
    site_jitter = rng.normal(0, 0.04, (n, labels_count, findings.SITE_VALUES))
    site_jitter[:, :, 0] = 0  # the side of a finding persists
    patient_severity = rng.random(labels_count)
    severity = patient_severity + rng.normal(0, 0.12, (n, labels_count))
    return {
        "labels": labels,
        "anatomy": np.broadcast_to(anatomy, (n, _ANATOMY_VALUES)),
        "jitter": rng.standard_normal((n, _JITTER_VALUES)),
        "exposure": rng.random((n, _EXPOSURE_VALUES)),
        "sites": np.clip(sites + site_jitter, 0, 1),
        "severity": 0.25 + 0.75 * np.clip(severity, 0, 1),
    }


def _sample_plan(config: PhantomConfig) -> _Plan:
    thresholds = latent_thresholds(config.floor_prevalence)
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

    for label, modify in ((_CARDIOMEGALY, findings.enlarge_heart), (_EMPHYSEMA, findings.hyperinflate)):
        index = positives(label)
        modify(scene, index, draw.column(strength[index, label]))

    x, y = draw.coordinates(scene, size)
    anatomy = draw.draw_anatomy(x, y, scene)
    density = anatomy.density
    boxes: list[np.ndarray] = []

    def record(label: int, index: np.ndarray, footprint: np.ndarray) -> None:
        found = findings.boxes_from_footprints(footprint)
        head = np.stack([index + rows.start, np.full_like(index, label)], axis=1)
        boxes.append(np.concatenate([head.astype(np.int32), found], axis=1))

    for label, name in enumerate(LABELS):
        index = positives(label)
        if len(index) == 0:
            continue
        if label == _CARDIOMEGALY:
            record(label, index, findings.cardiomegaly_footprint(anatomy)[index])
        elif label == _EMPHYSEMA:
            record(label, index, findings.emphysema_footprint(anatomy)[index])
        else:
            site = sites[index, label].astype(np.float32)[:, :, None, None]
            finding = findings.OPACITY_DRAWERS[name](
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
    for k, (patient, number) in enumerate(zip(plan.patient_ids[rows], plan.image_numbers[rows], strict=True)):
        seed = np.random.SeedSequence(config.seed, spawn_key=(int(patient), int(number)))
        noise[k] = np.random.default_rng(seed).standard_normal((size, size), dtype=np.float32)
    return noise


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def generate_phantom(config: PhantomConfig, progress: Callable[[int], None] | None = None) -> PhantomData:
    """Generate the phantom data set described by `config` (deterministic in the config).

    `progress`, if given, is called with the number of images drawn after each chunk.
    """
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
        if progress is not None:
            progress(rows.stop - rows.start)
    all_boxes = np.concatenate(boxes)
    all_boxes = all_boxes[np.lexsort((all_boxes[:, 1], all_boxes[:, 0]))]
    reference, used = reference_prevalence(), target_prevalence(config.floor_prevalence)
    return PhantomData(
        pixels=_read_only(pixels),
        labels=_read_only(plan.labels.astype(np.uint8)),
        patient_ids=_read_only(plan.patient_ids),
        sample_ids=tuple(f"phantom_p{p:06d}_f{i:03d}"
                         for p, i in zip(plan.patient_ids, plan.image_numbers, strict=True)),
        boxes=_read_only(np.ascontiguousarray(all_boxes, dtype=np.int32)),
        prevalence={name: (float(reference[k]), float(used[k])) for k, name in enumerate(LABELS)},
    )
