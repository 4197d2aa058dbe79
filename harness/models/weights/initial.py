"""Initial weights made once per run by the harness, with torchvision's initialisation scheme.

Every worker loads these same bytes, so no framework's own initialiser (or its RNG) decides the
starting point. Each tensor draws from its own stream, seeded by (run seed, tensor name), so the
values do not depend on the order tensors are made in.

torchvision's scheme, reproduced in numpy:
- conv weights: kaiming_normal_, std = sqrt(2 / fan), fan = out*k*k ("fan_out", ResNet) or
  in*k*k ("fan_in", DenseNet);
- BatchNorm: weight 1, bias 0, running mean 0, running variance 1;
- the linear head: nn.Linear's default, U(-1/sqrt(in), 1/sqrt(in)) for weight and bias; DenseNet
  zeroes the bias.
"""

from __future__ import annotations

import zlib

import numpy as np

from harness.models.architectures import (
    BN_BIAS,
    BN_MEAN,
    BN_VAR,
    BN_WEIGHT,
    CONV,
    HEAD_BIAS,
    HEAD_WEIGHT,
    Architecture,
    TensorSpec,
)

_STREAM_TAG = 0x1417  # keeps these streams apart from the harness's other uses of the run seed


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([_STREAM_TAG, seed, zlib.crc32(name.encode())])


def initial_tensor(spec: TensorSpec, arch: Architecture, seed: int) -> np.ndarray:
    """One tensor of the initial weights, float32, in the neutral layout."""
    if spec.role == CONV:
        out, inp, kh, kw = spec.shape
        fan = (out if arch.conv_fan == "fan_out" else inp) * kh * kw
        values = _rng(seed, spec.name).standard_normal(spec.shape) * np.sqrt(2.0 / fan)
    elif spec.role in (BN_WEIGHT, BN_VAR):
        values = np.ones(spec.shape)
    elif spec.role in (BN_BIAS, BN_MEAN) or (spec.role == HEAD_BIAS and arch.zero_head_bias):
        values = np.zeros(spec.shape)
    elif spec.role in (HEAD_WEIGHT, HEAD_BIAS):
        fan_in = arch.shapes()[f"{arch.head}.weight"][1]
        bound = 1.0 / np.sqrt(fan_in)
        values = _rng(seed, spec.name).uniform(-bound, bound, spec.shape)
    else:
        raise ValueError(f"{spec.name}: unknown role {spec.role!r}")
    return values.astype(np.float32)


def initial_weights(arch: Architecture, seed: int) -> dict[str, np.ndarray]:
    """All tensors of `arch`, initialised as torchvision would, from `seed` alone."""
    return {spec.name: initial_tensor(spec, arch, seed) for spec in arch.tensors}
