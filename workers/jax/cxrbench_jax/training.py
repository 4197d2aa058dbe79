"""The jit-compiled steps: Adam as PyTorch defines it (Optax), BCE with logits, and fp16 loss scaling.

Each function is pure: it takes the state (variables, Adam's state, the loss scale) and returns the
new one; the backend keeps the state and swaps it after each call. Images cross the host-device
boundary as uint8 and are normalised on the device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from cxrbench_worker.backend import AdamSettings, ModelSpec
from cxrbench_worker.mixed_precision import (
    LOSS_SCALE_BACKOFF_FACTOR,
    LOSS_SCALE_GROWTH_FACTOR,
    LOSS_SCALE_GROWTH_INTERVAL,
    LOSS_SCALE_INITIAL,
)

from .model import Variables


def _adam(learning_rate: float, b1: float, b2: float, eps: float, weight_decay: float) -> optax.GradientTransformation:
    # torch.optim.Adam: L2 weight decay added to the gradient before the moments (not AdamW's
    # decoupled decay), then p -= lr * m_hat / (sqrt(v_hat) + eps), eps outside the square root
    # and after the bias correction, which is where optax.adam puts it too (eps_root stays 0).
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(learning_rate, b1, b2, eps))


def adam(settings: AdamSettings) -> optax.GradientTransformation:
    """Adam with its learning rate held in its state (`set_learning_rate`), so changing it does not
    recompile the training step."""
    return optax.inject_hyperparams(_adam)(learning_rate=settings.learning_rate, b1=settings.beta1, b2=settings.beta2,
                                           eps=settings.epsilon, weight_decay=settings.weight_decay)


def set_learning_rate(opt_state: Any, learning_rate: float) -> Any:
    """`opt_state` with the new learning rate (float32, as the step reads it)."""
    opt_state.hyperparams["learning_rate"] = jnp.asarray(learning_rate, jnp.float32)
    return opt_state


class LossScale(NamedTuple):
    """fp16-mixed's dynamic loss scale and its count of finite steps in a row (torch's GradScaler)."""

    scale: jnp.ndarray
    finite_steps: jnp.ndarray

    @classmethod
    def initial(cls) -> LossScale:
        return cls(jnp.asarray(LOSS_SCALE_INITIAL, jnp.float32), jnp.asarray(0, jnp.int32))

    def next(self, finite: jnp.ndarray) -> LossScale:
        """Halve after a non-finite step; double after LOSS_SCALE_GROWTH_INTERVAL finite ones."""
        count = jnp.where(finite, self.finite_steps + 1, 0)
        grow = count >= LOSS_SCALE_GROWTH_INTERVAL
        factor = jnp.where(finite, jnp.where(grow, LOSS_SCALE_GROWTH_FACTOR, 1.0), LOSS_SCALE_BACKOFF_FACTOR)
        return LossScale(self.scale * factor, jnp.where(grow, 0, count))


class TrainState(NamedTuple):
    """Everything a training step reads and replaces."""

    variables: Variables
    opt_state: Any
    loss_scale: LossScale | None


def images(pixels: jnp.ndarray, mean: jnp.ndarray, std: jnp.ndarray) -> jnp.ndarray:
    """uint8 (N, H, W) -> normalised float32 (N, H, W, 3)."""
    x = pixels.astype(jnp.float32) / 255.0
    return (x[..., None] - mean) / std


def bce_with_logits(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Mean binary cross-entropy over every image and label, float32, from float32 logits."""
    return optax.sigmoid_binary_cross_entropy(logits, labels.astype(jnp.float32)).mean()


def make_steps(model: nn.Module, optimizer: optax.GradientTransformation,
               spec: ModelSpec) -> tuple[Callable, Callable, Callable]:
    """The jit-compiled (train, predict, feature_maps) for `model`; each compiles once per batch shape.

    train(state, pixels, labels) -> (state, loss): one Adam step in train mode; the loss is that of
    the batch before the update, unscaled, as torch reports it. feature_maps(variables, pixels) ->
    (NCHW features, logits) and predict(variables, pixels) -> its logits, both in eval mode.
    """
    mean = jnp.asarray(spec.mean, jnp.float32)
    std = jnp.asarray(spec.std, jnp.float32)

    def loss_of(params, batch_stats, x, labels, scale):
        logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                      mutable=["batch_stats"])
        loss = bce_with_logits(logits, labels)
        return loss * scale, (loss, updates["batch_stats"])

    gradient = jax.grad(loss_of, has_aux=True)

    def train(state: TrainState, pixels, labels):
        variables, scaler = state.variables, state.loss_scale
        scale = jnp.float32(1.0) if scaler is None else scaler.scale
        grads, (loss, batch_stats) = gradient(variables["params"], variables["batch_stats"],
                                              images(pixels, mean, std), labels, scale)
        if scaler is not None:
            grads = jax.tree_util.tree_map(lambda g: g * (1.0 / scale), grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, variables["params"])
        params = optax.apply_updates(variables["params"], updates)
        if scaler is not None:
            # A step with an inf or NaN gradient is skipped: parameters and Adam's state (its step
            # count too) stay; BatchNorm's running statistics moved in the forward pass, as in torch.
            finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grads)]))
            keep = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
            params, opt_state = keep(params, variables["params"]), keep(opt_state, state.opt_state)
            scaler = scaler.next(finite)
        return TrainState({"params": params, "batch_stats": batch_stats}, opt_state, scaler), loss

    def feature_maps(variables, pixels):
        features, logits = model.apply(variables, images(pixels, mean, std), method=model.features_and_logits)
        return jnp.transpose(features, (0, 3, 1, 2)).astype(jnp.float32), logits

    compiled_feature_maps = jax.jit(feature_maps)

    def predict(variables, pixels):
        # The feature-map program, its maps left on the device: compiled apart, XLA would fuse the
        # pooling differently, and under bfloat16 the logits of the two would round differently
        # (3e-3 apart), where the contract wants FeatureMaps' logits to be Predict's.
        return compiled_feature_maps(variables, pixels)[1]

    # The old state's buffers are given to the new one (donated): one copy of the weights, not two.
    return jax.jit(train, donate_argnums=0), predict, compiled_feature_maps
