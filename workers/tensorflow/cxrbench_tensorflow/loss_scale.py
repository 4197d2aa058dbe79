"""Dynamic loss scaling for fp16-mixed, written out as torch.amp.GradScaler does it.

The loss is multiplied by the scale before the backward pass, so that small float16 gradients do not
flush to zero; the float32 gradients are then divided by it. A step whose gradients hold an inf or a
NaN is skipped (no Adam update, Adam's step count unchanged) and the scale halved; after
LOSS_SCALE_GROWTH_INTERVAL finite steps in a row it doubles. The scale is a power of two, so scaling
and unscaling are exact.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from cxrbench_worker.mixed_precision import (
    LOSS_SCALE_BACKOFF_FACTOR,
    LOSS_SCALE_GROWTH_FACTOR,
    LOSS_SCALE_GROWTH_INTERVAL,
    LOSS_SCALE_INITIAL,
)


class DynamicLossScale(tf.Module):
    """The scale and its count of finite steps, as variables (no retracing when they change)."""

    def __init__(self) -> None:
        super().__init__(name=None)
        self.scale = tf.Variable(LOSS_SCALE_INITIAL, dtype=tf.float32, trainable=False, name="loss_scale")
        self.finite_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="loss_scale/finite_steps")

    def scaled(self, loss: tf.Tensor) -> tf.Tensor:
        """The loss times the current scale (differentiate this one)."""
        return loss * self.scale

    def apply(self, scaled_gradients: list[tf.Tensor], update: Callable[[list[tf.Tensor]], None]) -> tf.Tensor:
        """Unscale, then `update(gradients)` if every one is finite, then adapt the scale; inside the
        tf.function. Returns whether the step was taken (a bool tensor)."""
        inverse = 1.0 / self.scale
        gradients = [gradient * inverse for gradient in scaled_gradients]
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(gradient)) for gradient in gradients])

        def take() -> tf.Tensor:
            update(gradients)
            return tf.constant(True)

        taken = tf.cond(finite, take, lambda: tf.constant(False))
        count = tf.where(finite, self.finite_steps + 1, tf.constant(0, tf.int64))
        grow = count >= LOSS_SCALE_GROWTH_INTERVAL
        factor = tf.where(finite, tf.where(grow, LOSS_SCALE_GROWTH_FACTOR, 1.0), LOSS_SCALE_BACKOFF_FACTOR)
        self.scale.assign(self.scale * factor)
        self.finite_steps.assign(tf.where(grow, tf.constant(0, tf.int64), count))
        return taken
