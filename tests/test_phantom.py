"""Tests of the phantom data set (numpy only, small configs, a few seconds in all)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from conftest import REFERENCE
from harness.data.datasets import phantom
from harness.data.datasets.phantom import LABELS, PhantomConfig, PhantomData, generate_phantom

SMALL = PhantomConfig(seed=3, patients=40, image_size=32)


@pytest.fixture(scope="module")
def small() -> PhantomData:
    return generate_phantom(SMALL)


def digest(data: PhantomData) -> dict[str, str]:
    arrays = {"pixels": data.pixels, "labels": data.labels, "patient_ids": data.patient_ids, "boxes": data.boxes}
    return {name: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() for name, a in arrays.items()}


def test_same_seed_gives_identical_bytes(small: PhantomData) -> None:
    again = generate_phantom(SMALL)
    assert digest(again) == digest(small)
    assert again.sample_ids == small.sample_ids


def test_other_seed_differs(small: PhantomData) -> None:
    other = generate_phantom(PhantomConfig(seed=4, patients=40, image_size=32))
    mine, theirs = digest(small), digest(other)
    assert mine["pixels"] != theirs["pixels"]
    assert mine["labels"] != theirs["labels"]


def test_a_patient_does_not_depend_on_how_many_others_there_are(small: PhantomData) -> None:
    fewer = generate_phantom(PhantomConfig(seed=3, patients=10, image_size=32))
    count = len(fewer.patient_ids)
    assert np.array_equal(fewer.pixels, small.pixels[:count])
    assert np.array_equal(fewer.labels, small.labels[:count])


def test_shapes_and_dtypes(small: PhantomData) -> None:
    count = len(small.patient_ids)
    assert small.pixels.shape == (count, 32, 32) and small.pixels.dtype == np.uint8
    assert small.labels.shape == (count, len(LABELS)) and small.labels.dtype == np.uint8
    assert set(np.unique(small.labels)) <= {0, 1}
    assert small.patient_ids.dtype == np.int64
    assert small.boxes.ndim == 2 and small.boxes.shape[1] == 6 and small.boxes.dtype == np.int32
    assert len(small.sample_ids) == count and len(set(small.sample_ids)) == count
    assert small.sample_ids[0].startswith("phantom_p000000_f000")
    assert list(small.prevalence) == list(LABELS)
    assert small.pixels.std() > 10  # an image, not a constant
    with pytest.raises(ValueError):
        small.pixels[0, 0, 0] = 1  # read-only


def test_patients_have_several_images_and_a_persistent_anatomy() -> None:
    data = generate_phantom(PhantomConfig(seed=1, patients=120, image_size=32, conspicuity=0.3))
    patients, counts = np.unique(data.patient_ids, return_counts=True)
    assert len(patients) == 120 and counts.max() <= phantom.MAX_IMAGES_PER_PATIENT
    assert 2.0 < counts.mean() < 3.5  # the folded reference histogram has mean 2.72
    assert np.all(np.diff(data.patient_ids) >= 0)  # a patient's images are contiguous
    for patient in patients[:5]:
        numbers = [int(s.split("_f")[1]) for s, p in zip(data.sample_ids, data.patient_ids) if p == patient]
        assert numbers == list(range(len(numbers)))
    # A patient's images resemble each other more than other patients' images (same anatomy).
    images = data.pixels.astype(np.float32).reshape(len(data.pixels), -1)
    images = (images - images.mean(1, keepdims=True)) / images.std(1, keepdims=True)
    similarity = images @ images.T / images.shape[1]
    same = data.patient_ids[:, None] == data.patient_ids[None, :]
    off_diagonal = ~np.eye(len(images), dtype=bool)
    assert similarity[same & off_diagonal].mean() > similarity[~same].mean() + 0.02


def test_boxes_lie_inside_and_match_the_labels(small: PhantomData) -> None:
    size = SMALL.image_size
    sample, label, x, y, w, h = small.boxes.T
    assert np.all((x >= 0) & (y >= 0) & (w >= 1) & (h >= 1))
    assert np.all((x + w <= size) & (y + h <= size))
    assert np.all(small.labels[sample, label] == 1), "a box for a negative label"
    boxed = np.zeros_like(small.labels)
    boxed[sample, label] = 1
    assert np.array_equal(boxed, small.labels), "a positive label without a box"


def test_boxes_scale_with_resolution() -> None:
    low = generate_phantom(PhantomConfig(seed=5, patients=6, image_size=32))
    high = generate_phantom(PhantomConfig(seed=5, patients=6, image_size=128))
    assert np.array_equal(low.labels, high.labels)
    assert np.array_equal(low.boxes[:, :2], high.boxes[:, :2])
    big = (low.boxes[:, 4] >= 6) & (low.boxes[:, 5] >= 6)  # small boxes are dominated by rounding
    centres_low = (low.boxes[big, 2:4] + low.boxes[big, 4:6] / 2) / 32
    centres_high = (high.boxes[big, 2:4] + high.boxes[big, 4:6] / 2) / 128
    assert np.abs(centres_low - centres_high).max() < 0.08


def test_prevalence_follows_reference_with_floor() -> None:
    config = PhantomConfig(seed=11, patients=3000, image_size=16, floor_prevalence=0.05)
    plan = phantom._sample_plan(config)  # labels only: no need to draw 8,000 images
    observed = plan.labels.mean(axis=0)
    target = phantom.target_prevalence(0.05)
    reference = phantom.reference_prevalence()
    assert np.all(target >= 0.05) and np.all(target[reference >= 0.05] == reference[reference >= 0.05])
    # Patients share a latent, so images are clustered: allow about three cluster-inflated errors.
    tolerance = 3 * np.sqrt(target * (1 - target) / len(observed) * 3)
    assert np.all(np.abs(observed - target) < tolerance), (observed, target)


def test_prevalence_record() -> None:
    data = generate_phantom(PhantomConfig(seed=0, patients=2, image_size=16, floor_prevalence=0.03))
    reference, used = data.prevalence["Hernia"]
    assert reference == pytest.approx(227 / 112120) and used == 0.03
    reference, used = data.prevalence["Infiltration"]
    assert reference == used == pytest.approx(19894 / 112120)


def test_co_occurrence_follows_reference() -> None:
    plan = phantom._sample_plan(PhantomConfig(seed=12, patients=4000, image_size=16, floor_prevalence=0.0))
    labels = plan.labels.astype(np.float64)
    observed = labels.T @ labels / len(labels)
    reference = np.asarray(phantom.REFERENCE_COOCCURRENCE) / phantom.REFERENCE_IMAGES
    assert np.abs(observed - reference).max() < 0.012
    # Strongly associated pairs keep their association (lift well above 1).
    effusion, cardiomegaly = LABELS.index("Effusion"), LABELS.index("Cardiomegaly")
    lift = observed[effusion, cardiomegaly] / (observed[effusion, effusion] * observed[cardiomegaly, cardiomegaly])
    assert lift > 2


def test_latent_correlation_is_a_correlation_matrix() -> None:
    rho = phantom.latent_correlation()
    assert rho.shape == (14, 14) and np.allclose(rho, rho.T) and np.allclose(np.diag(rho), 1)
    assert np.linalg.eigvalsh(rho).min() > 0


def test_embedded_reference_matches_the_stats_file() -> None:
    stats = json.loads((REFERENCE / "chestxray14_stats.json").read_text())
    assert tuple(stats["labels"]) == LABELS
    assert tuple(stats["label_count"]) == phantom.REFERENCE_LABEL_COUNT
    assert [tuple(row) for row in stats["cooccurrence"]] == list(phantom.REFERENCE_COOCCURRENCE)
    assert stats["images"] == phantom.REFERENCE_IMAGES
    histogram = stats["images_per_patient_histogram"]
    head = [histogram[str(k)] for k in range(1, phantom.MAX_IMAGES_PER_PATIENT)]
    assert tuple(head) == phantom.REFERENCE_IMAGES_PER_PATIENT[:-1]
    assert sum(phantom.REFERENCE_IMAGES_PER_PATIENT) == stats["patients"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seed", -1),
        ("seed", 1.5),
        ("patients", 0),
        ("patients", True),
        ("image_size", 8),
        ("image_size", 2048),
        ("floor_prevalence", 0.5),
        ("floor_prevalence", -0.1),
        ("conspicuity", 0.0),
        ("conspicuity", float("nan")),
    ],
)
def test_config_validation_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        PhantomConfig(**{field: value})
