"""torch.optim.Adam on TensorFlow's own Adam kernel (`ResourceApplyAdam`), no Keras optimizer.

PyTorch's update is  p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
TF's kernel computes p -= lr' * sqrt(1 - b2p) / (1 - b1p) * m / (sqrt(v) + eps'), adding epsilon to
sqrt(v) rather than to the bias-corrected sqrt(v_hat). Both are equal with eps' = eps * sqrt(1 - b2^t).
The bias corrections are computed here in float64 and folded into lr' (with b1p = b2p = 0 given to
the kernel), so they are not rounded through float32 powers as the kernel would do.
"""

from __future__ import annotations

import tensorflow as tf

from cxrbench_worker.backend import AdamSettings


class TorchAdam(tf.Module):
    """Adam with PyTorch's definition: L2 `weight_decay` added to the gradient, eps as torch."""

    def __init__(self, variables: list[tf.Variable], settings: AdamSettings) -> None:
        super().__init__(name=None)
        self.variables_to_train = list(variables)
        self.settings = settings
        # A variable, so set_learning_rate changes it without retracing the training step.
        self.learning_rate = tf.Variable(settings.learning_rate, dtype=tf.float64,
                                         trainable=False, name="adam/learning_rate")
        self.step = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="adam/step")
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False, name="adam/m")
                  for v in self.variables_to_train]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False, name="adam/v")
                  for v in self.variables_to_train]

    def apply(self, gradients: list[tf.Tensor]) -> None:
        """One update of every variable from its gradient (call inside the tf.function)."""
        s = self.settings
        t = self.step.assign_add(1.0)
        beta1 = tf.constant(s.beta1, tf.float64)
        beta2 = tf.constant(s.beta2, tf.float64)
        correction2 = tf.sqrt(1.0 - tf.pow(beta2, t))
        step_size = tf.cast(self.learning_rate * correction2 / (1.0 - tf.pow(beta1, t)), tf.float32)
        epsilon = tf.cast(s.epsilon * correction2, tf.float32)
        zero = tf.constant(0.0, tf.float32)
        for variable, m, v, grad in zip(self.variables_to_train, self.m, self.v, gradients, strict=True):
            if s.weight_decay:
                grad = grad + s.weight_decay * variable
            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle, m=m.handle, v=v.handle,
                beta1_power=zero, beta2_power=zero, lr=step_size,
                beta1=tf.constant(s.beta1, tf.float32), beta2=tf.constant(s.beta2, tf.float32),
                epsilon=epsilon, grad=grad, use_locking=False, use_nesterov=False)
