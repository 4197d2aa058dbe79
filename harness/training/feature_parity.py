"""Parity of the final feature maps, and so of the class activation maps computed from them.

The parity probe also asks each worker for its eval-mode feature maps of the eval batch from the
starting weights (FeatureMaps, in the probed precision, FEATURE_MAP_BATCH_SIZE images a request at
most). The CAMs are computed here, by harness.evaluation.cams (the one formula the localisation scores
use), from those maps and the starting head weight, which every worker shares. Two workers' maps and
their CAMs are compared as their eval logits are (harness.training.differences: max|a - b| over the
larger magnitude) under one limit, set by training.parity.Tolerances per precision: the logits'.
fp32: 1e-4. Measured with `harness parity --workers all` on this project's CPU (ResNet-50, 64 px,
16 images, seed 0): maps 1.6e-6 to 1.9e-6 (max abs 6e-5 to 7e-5), CAMs 1.7e-6 to 2.1e-6 across the
three pairs; DenseNet-121 (4 images) maps 6.5e-7, CAMs 9.5e-7. A CAM is a weighted sum of the maps'
channels, so its relative difference follows the maps' (cancellation could raise it; it did not, and
it is checked, not assumed).
bf16-mixed: a floor of 2u widened by 3 x the larger own deviation from the worker's fp32 run (under a
ceiling of 16u = 6.25e-2), as for logits. Measured likewise: own deviations 1.01e-2 (PyTorch) and
1.05e-2 (TensorFlow, Keras), about 2.7u; pairs 9.7e-3 (PyTorch against the others; TensorFlow and
Keras bit-equal), CAMs 1.0e-2, allowed 3.2e-2; the fp32 reference runs' maps 1.6e-6 to 1.9e-6.
"""

from __future__ import annotations

import numpy as np

from cxrbench.worker.v1.tensors import make_batch
from cxrbench_worker.neutral_weights import weights_from_bytes
from harness.evaluation.cams import class_activation_maps
from harness.models.architectures import architecture
from harness.runtime.client import FEATURE_MAP_BATCH_SIZE, WorkerClient
from harness.training.differences import max_abs_difference, relative_difference


def feature_maps(client: WorkerClient, pixels: np.ndarray) -> np.ndarray:
    """The worker's eval-mode final feature maps of `pixels`, float32 (N, C, h, w), in small batches."""
    starts = range(0, len(pixels), FEATURE_MAP_BATCH_SIZE)
    batches = (make_batch(i, pixels[s:s + FEATURE_MAP_BATCH_SIZE]) for i, s in enumerate(starts))
    features, _, _ = client.feature_maps(batches)
    return features


def starting_cams(features: np.ndarray, start: bytes, architecture_name: str, num_labels: int) -> np.ndarray:
    """CAMs (N, L, h, w) of `features` with the head weight of the starting weights `start`."""
    head = architecture(architecture_name, num_labels).head
    return class_activation_maps(features, weights_from_bytes(start)[f"{head}.weight"])


def feature_map_row(workers: list[str], features: tuple[np.ndarray, np.ndarray], cams: tuple[np.ndarray, np.ndarray],
                    allowed: float, reference: tuple[np.ndarray, np.ndarray, float] | None = None) -> dict:
    """One pair's row: maps and CAMs within `allowed`. `reference` (mixed precision): the two fp32
    reference runs' maps and fp32's limit, which they must meet too."""
    maps = relative_difference(*features)
    maps_of_cams = relative_difference(*cams)
    ok = maps <= allowed and maps_of_cams <= allowed
    row: dict = {"workers": list(workers), "features_max_abs": max_abs_difference(*features),
                 "features_relative": maps, "cams_max_abs": max_abs_difference(*cams), "cams_relative": maps_of_cams,
                 "allowed": allowed}
    if reference is not None:
        first, second, limit = reference
        fp32 = relative_difference(first, second)
        row.update(reference_features_relative=fp32, reference_ok=fp32 <= limit)
        ok = ok and fp32 <= limit
    return {**row, "ok": ok}
