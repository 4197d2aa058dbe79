"""Labels of the phantom: reference statistics and the Gaussian copula that samples them (numpy only).

One job: decide which of the 14 labels each phantom image carries. Pixels are drawn elsewhere
(`phantom_drawing`, `phantom_findings`); `phantom` ties the parts together.

The reference statistics of NIH ChestX-ray14 (reference/chestxray14_stats.json) are embedded
below so the harness needs no file. Arrays are in the order of `phantom.LABELS`.

How labels are drawn
    A Gaussian copula. For each pair of labels the tetrachoric correlation is solved from the
    reference prevalences and co-occurrence counts, the matrix is made positive definite, and each
    image gets a latent z ~ N(0, R) thresholded at the label's target prevalence. z is the sum of a
    patient part and an image part (shares PATIENT_SHARE and 1 - PATIENT_SHARE of the variance), so
    a patient's follow-up images tend to carry the same findings, while the marginal prevalences
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
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

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

PATIENT_SHARE = 0.5  # share of the label latent's variance common to all images of a patient


# ---------------------------------------------------------------------------------------------
# Prevalences
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


# ---------------------------------------------------------------------------------------------
# Gaussian copula
# ---------------------------------------------------------------------------------------------


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


def latent_thresholds(floor_prevalence: float) -> np.ndarray:
    """Per-label latent thresholds: P(z > threshold) is the label's target prevalence."""
    return _normal_threshold(target_prevalence(floor_prevalence))


def sample_labels(rng: np.random.Generator, images: int, thresholds: np.ndarray, cholesky: np.ndarray) -> np.ndarray:
    """Bool (images, 14) labels of one patient's images: a patient latent plus an image latent, thresholded.

    `cholesky` is the Cholesky factor of `latent_correlation()`. Draws 14 normals for the patient,
    then images x 14 for the images, always in that order.
    """
    count = len(thresholds)
    patient_latent = cholesky @ rng.standard_normal(count)
    image_latent = rng.standard_normal((images, count)) @ cholesky.T
    latent = math.sqrt(PATIENT_SHARE) * patient_latent + math.sqrt(1 - PATIENT_SHARE) * image_latent
    return latent > thresholds
