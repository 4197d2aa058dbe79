"""Mixed precision: the one recipe every worker runs for `bf16-mixed` and `fp16-mixed`, and where the
frameworks cannot run it alike.

The recipe (PyTorch's autocast defines it; TensorFlow and Keras are written to match):
- Master weights, Adam's moments and the update stay float32. The forward pass casts each weight to
  the compute dtype (bfloat16 or float16) where it is used; gradients flow back through that cast, so
  every weight's gradient arrives in float32.
- Convolutions and the linear head compute in the compute dtype (their kernels accumulate in float32
  and round the result once); activations between layers (ReLU, max-pool, the residual adds, the
  concatenations of DenseNet) are stored in the compute dtype.
- The input normalisation ((pixels / 255 - mean) / std) is float32; the first conv casts its result.
- BatchNorm takes the low-precision activations, computes the batch statistics, normalises and updates
  its running statistics in float32 (float32 scale, shift and statistics), and returns the compute dtype.
- The global average pool accumulates in float32 and rounds once to the compute dtype.
- The logits leave the head in the compute dtype and are cast to float32; the BCE-with-logits loss is
  computed in float32 from them, and Predict returns them as float32.
- fp16-mixed scales the loss dynamically, as torch's GradScaler does by default: initial scale 2^16,
  gradients unscaled in float32; a step whose gradients hold an inf or NaN is skipped and the scale
  halved; after 2000 finite steps in a row the scale doubles. bf16-mixed has float32's exponent range
  and scales nothing.

Per framework:
- PyTorch: `torch.autocast(device, dtype)` around the forward pass (CPU and CUDA alike), the loss on
  `logits.float()`, `torch.amp.GradScaler` for fp16 (on CPU too: torch has CPU float16 kernels).
- TensorFlow (tf.nn ops, no Keras): the model itself casts (`cxrbench_tensorflow.layers`): each conv and
  the head cast their float32 variables to the compute dtype; FusedBatchNormV3 takes low-precision x
  with float32 scale, offset and statistics (its U type). Loss scaling is written out in the training
  step (`cxrbench_tensorflow.loss_scale`), with the same constants as the GradScaler.
- Keras: the dtype policies "mixed_bfloat16" / "mixed_float16"; the project's TorchBatchNorm computes
  in float32 (its variables' dtype) and returns the compute dtype; the head computes under the policy
  and a float32 linear activation casts the logits; fp16 wraps Adam in a LossScaleOptimizer with
  initial scale 2^16 and 2000 growth steps (Keras's default would start at 2^15).

Where they cannot match (each is a rounding difference of the order of the compute dtype's unit
roundoff, which the parity tolerances for mixed precision allow for; see harness.training.parity):
- Which kernel a framework picks, and so where its convolutions round (oneDNN on CPU, cuDNN on GPU),
  is its own; PyTorch's addmm adds the head's bias before rounding, TensorFlow and Keras round the
  matmul and then add the bias in the compute dtype.
- ReLU, max-pool and the adds are exact or round once in every framework, but BatchNorm's float32
  output is rounded at a slightly different point (PyTorch's CPU kernel fuses it; the others cast).
- GradScaler checks for infs after unscaling with one fused kernel; TensorFlow and Keras test every
  gradient with `tf.math.is_finite`: the same decision, found differently.
- Keras's LossScaleOptimizer counts its growth interval from the first step, as the GradScaler does;
  a scale change lands on the same step in both.
"""

from __future__ import annotations

#: The dtype the network computes in under each precision, as the workers report it.
COMPUTE_DTYPES = {"fp32": "float32", "bf16-mixed": "bfloat16", "fp16-mixed": "float16"}
#: Dynamic loss scaling for fp16-mixed, torch's GradScaler's defaults.
LOSS_SCALE_INITIAL = 2.0**16
LOSS_SCALE_GROWTH_INTERVAL = 2000
LOSS_SCALE_GROWTH_FACTOR = 2.0
LOSS_SCALE_BACKOFF_FACTOR = 0.5


def precision_flags(precision: str) -> dict[str, str]:
    """The numerics keys every worker reports alike for `precision` (one of backend.PRECISIONS): the
    dtype the network computes in, the master weights' dtype, and the loss scaling ("dynamic" for
    fp16-mixed, with its initial scale and growth interval; "none" otherwise)."""
    flags = {"precision": precision, "compute_dtype": COMPUTE_DTYPES[precision], "variable_dtype": "float32",
             "loss_scale": "none"}
    if precision == "fp16-mixed":
        flags.update(loss_scale="dynamic", loss_scale_initial=f"{LOSS_SCALE_INITIAL:g}",
                     loss_scale_growth_interval=str(LOSS_SCALE_GROWTH_INTERVAL))
    return flags
