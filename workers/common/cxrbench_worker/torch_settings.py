"""torch's process-wide numerics switches, set alike by the `pytorch` worker and Keras on torch
(`keras[torch]`), as tensorflow_settings.py and jax_settings.py are shared by their frameworks' workers.

torch is imported inside the function only, so the SDK imports without it.
"""

from __future__ import annotations


def set_numerics(allow_tf32: bool, deterministic: bool) -> None:
    """TF32 for matmuls and cuDNN convolutions, and deterministic algorithms, on or off.

    cuDNN's TF32 defaults to on in PyTorch, so both TF32 flags are always set explicitly. ResNet and
    DenseNet pool to 1x1, which torch lowers to a mean (deterministic backward), so warn_only=False
    does not trip on AdaptiveAvgPool2d. cuDNN's autotuning picks kernels by timing, which varies from
    run to run: it is on only when determinism is off."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    torch.set_float32_matmul_precision("high" if allow_tf32 else "highest")
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
