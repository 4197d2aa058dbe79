"""The networks, their variables, and the neutral weight format (torchvision's names and layouts).

A model's variables are Flax's two collections: "params" (trainable) and "batch_stats" (BatchNorm's
running statistics). Their paths are torchvision's names (see `layers`), so the neutral format is:
- the leaf renamed: a convolution's or the head's "kernel" is torchvision's "weight";
- the layout changed: a convolution's HWIO kernel is torch's OIHW, the head's (in, out) is (out, in).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from cxrbench_worker.backend import check_architecture, check_num_labels
from cxrbench_worker.neutral_weights import check_tensors

from .densenet import DenseNet121
from .layers import Dtype
from .resnet import ResNet50

Variables = dict[str, Any]  # {"params": ..., "batch_stats": ...}, nested by module path

_NETWORKS = {"resnet50": ResNet50, "densenet121": DenseNet121}


def build_model(architecture: str, num_labels: int, dtype: Dtype = jnp.float32) -> nn.Module:
    """The Flax module of `architecture` with a `num_labels`-logit head, computing in `dtype`.

    UnsupportedOption for an unknown architecture, ValueError for num_labels < 1."""
    check_architecture(architecture, _NETWORKS)
    check_num_labels(num_labels)
    return _NETWORKS[architecture](num_labels, dtype)


class Programs:
    """A model and its compiled functions: `steps` (train, predict, feature_maps) and its initialiser."""

    def __init__(self, model: nn.Module, steps: tuple) -> None:
        self.model = model
        self.steps = steps
        # The variables' shapes do not depend on the image size (the network pools globally).
        sample = jnp.zeros((1, 32, 32, 3), jnp.float32)
        self._init = jax.jit(lambda key: model.init(key, sample, train=False))

    def initial_variables(self, seed: int) -> Variables:
        """The model's variables drawn from `seed` (torchvision's schemes; the harness usually
        replaces them with SetWeights), float32."""
        variables = self._init(jax.random.key(seed))
        return {"params": variables["params"], "batch_stats": variables["batch_stats"]}


def count_parameters(variables: Variables) -> tuple[int, int]:
    """(trainable, non_trainable) element counts: the parameters, then BatchNorm's running mean and
    variance (torch's num_batches_tracked counter has no counterpart here, and is no weight)."""
    def size(tree: Any) -> int:
        return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))
    return size(variables["params"]), size(variables["batch_stats"])


def neutral_name(collection: str, path: tuple[str, ...]) -> str:
    """The torchvision name of the variable at `path` in `collection`."""
    leaf = "weight" if path[-1] == "kernel" else path[-1]
    return ".".join((*path[:-1], leaf))


def to_neutral(value: np.ndarray) -> np.ndarray:
    """A variable's value in torchvision's layout (by rank: 4 a convolution, 2 the head), float32."""
    value = np.asarray(value, dtype=np.float32)
    if value.ndim == 4:
        value = value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
    elif value.ndim == 2:
        value = value.T  # (in, out) -> (out, in)
    return np.array(value, dtype=np.float32, order="C", copy=True)


def neutral_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape torchvision gives the variable of `shape`."""
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    return tuple(reversed(shape)) if len(shape) == 2 else tuple(shape)


def from_neutral(value: np.ndarray) -> np.ndarray:
    """A torchvision-layout array in the variable's layout, float32."""
    value = np.asarray(value, dtype=np.float32)
    if value.ndim == 4:
        value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    elif value.ndim == 2:
        value = value.T
    return np.ascontiguousarray(value)


def _flat(variables: Variables) -> dict[str, tuple[str, tuple[str, ...], Any]]:
    """Every variable by torchvision name: (collection, path, value), in a stable order."""
    found = {}
    for collection in ("params", "batch_stats"):
        for path, value in flatten_dict(variables[collection]).items():
            found[neutral_name(collection, path)] = (collection, path, value)
    return found


def export_neutral(variables: Variables) -> dict[str, np.ndarray]:
    """Parameters and BatchNorm running statistics, torchvision names and layouts, float32 copies."""
    return {name: to_neutral(jax.device_get(value)) for name, (_, _, value) in _flat(variables).items()}


def import_neutral(variables: Variables, tensors: dict[str, np.ndarray]) -> Variables:
    """New variables holding the neutral `tensors`; ValueError naming missing, unexpected or
    misshapen tensors (nothing is changed then)."""
    flat = _flat(variables)
    check_tensors({name: neutral_shape(tuple(value.shape)) for name, (_, _, value) in flat.items()}, tensors)
    collections: dict[str, dict[tuple[str, ...], Any]] = {"params": {}, "batch_stats": {}}
    for name, (collection, path, _) in flat.items():
        collections[collection][path] = jnp.asarray(from_neutral(tensors[name]))
    return {collection: unflatten_dict(values) for collection, values in collections.items()}
