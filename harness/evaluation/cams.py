"""Class activation maps, computed by the harness from a worker's final feature maps and head weights.

For a network that ends in global average pooling and one linear layer (ResNet-50, DenseNet-121),
logit_c = b_c + mean_xy sum_k w_ck F_k(x, y), so CAM_c = sum_k w_ck F_k is exact (Zhou et al. 2016):
its spatial mean plus the bias is the logit. The bias shifts every location alike and is left out.
"""

from __future__ import annotations

import numpy as np


def class_activation_maps(features: np.ndarray, head_weight: np.ndarray) -> np.ndarray:
    """features float32 (N, C, h, w) channels first, head_weight (L, C) -> CAMs float32 (N, L, h, w).

    Computed in float64 and returned as float32, so the result does not depend on summation order
    beyond float32 rounding of the inputs.
    """
    features = np.asarray(features)
    head_weight = np.asarray(head_weight)
    if features.ndim != 4:
        raise ValueError(f"features must be (N, C, h, w), got shape {features.shape}")
    if head_weight.ndim != 2 or head_weight.shape[1] != features.shape[1]:
        raise ValueError(f"head weight must be (L, {features.shape[1]}) for {features.shape[1]} feature channels, "
                         f"got shape {head_weight.shape}")
    maps = np.einsum("lc,nchw->nlhw", head_weight.astype(np.float64), features.astype(np.float64))
    return maps.astype(np.float32)
