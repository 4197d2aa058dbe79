"""Functional-API helpers that record, for every weight, its neutral (torchvision) name and layout.

The mapping neutral name -> Keras variable is built while the network is built, so import and
export never depend on the names Keras makes up for layers and variables.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from .torch_layers import TorchBatchNorm

# Layouts: a conv kernel is OIHW in torch and HWIO in Keras; a Linear weight (out, in) is the
# transpose of a Dense kernel (in, out); vectors (biases, BatchNorm) are the same in both.
CONV, DENSE, VECTOR = "conv", "dense", "vector"
_TO_KERAS = {CONV: (2, 3, 1, 0), DENSE: (1, 0)}
_TO_NEUTRAL = {CONV: (3, 2, 0, 1), DENSE: (1, 0)}


@dataclass(frozen=True)
class NeutralTensor:
    """One neutral tensor: the Keras variable holding it and how its layout differs."""

    variable: keras.Variable
    layout: str

    def neutral_shape(self) -> tuple[int, ...]:
        """The shape the tensor has in the neutral (torchvision) format."""
        shape = tuple(int(d) for d in self.variable.shape)
        axes = _TO_NEUTRAL.get(self.layout)
        return shape if axes is None else tuple(shape[a] for a in axes)

    def read(self) -> np.ndarray:
        """A float32, C-contiguous copy in the neutral layout."""
        value = np.asarray(keras.ops.convert_to_numpy(self.variable.value), dtype=np.float32)
        axes = _TO_NEUTRAL.get(self.layout)
        value = value if axes is None else value.transpose(axes)
        return np.array(value, dtype=np.float32, order="C", copy=True)

    def write(self, array: np.ndarray) -> None:
        """Assign a neutral-layout array (shape already checked by the caller)."""
        value = np.asarray(array, dtype=np.float32)
        axes = _TO_KERAS.get(self.layout)
        self.variable.assign(value if axes is None else np.ascontiguousarray(value.transpose(axes)))


def kaiming_normal(mode: str) -> keras.initializers.Initializer:
    """torch.nn.init.kaiming_normal_(mode=mode, nonlinearity="relu"), as torchvision inits convs."""
    return keras.initializers.VarianceScaling(2.0, mode, "untruncated_normal")


def torch_linear_uniform() -> keras.initializers.Initializer:
    """nn.Linear's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), for weight and bias alike."""
    return keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")


class NetworkBuilder:
    """Adds named layers to a functional graph and remembers their neutral names."""

    def __init__(self, conv_init: keras.initializers.Initializer) -> None:
        self.conv_init = conv_init
        self._named: list[tuple[str, keras.layers.Layer]] = []

    def _add(self, name: str, layer: keras.layers.Layer) -> keras.layers.Layer:
        self._named.append((name, layer))
        return layer

    def conv(self, x, name: str, filters: int, kernel: int, stride: int = 1, padding: int = 0):
        """Bias-free conv with PyTorch's symmetric zero padding (explicit pad + "valid")."""
        if padding:
            x = keras.layers.ZeroPadding2D(padding)(x)
        layer = keras.layers.Conv2D(filters, kernel, strides=stride, padding="valid", use_bias=False,
                                    kernel_initializer=self.conv_init, name=_keras_name(name))
        return self._add(name, layer)(x)

    def batch_norm(self, x, name: str):
        """PyTorch-semantics BatchNorm (eps 1e-5, momentum 0.1, unbiased running_var)."""
        return self._add(name, TorchBatchNorm(name=_keras_name(name)))(x)

    def dense(self, x, name: str, units: int, bias_init: keras.initializers.Initializer):
        """Linear head computing under the policy (bfloat16 / float16 under a mixed one, as torch's
        autocast runs nn.Linear), then its output cast to float32, like torch's logits.float()."""
        layer = keras.layers.Dense(units, kernel_initializer=torch_linear_uniform(),
                                   bias_initializer=bias_init, name=_keras_name(name))
        logits = self._add(name, layer)(x)
        return keras.layers.Activation("linear", dtype="float32", name="logits_float32")(logits)

    def neutral_tensors(self) -> dict[str, NeutralTensor]:
        """Neutral name -> variable, in torchvision's state_dict order; call after the model is built."""
        tensors: dict[str, NeutralTensor] = {}
        for name, layer in self._named:
            if isinstance(layer, keras.layers.Conv2D):
                tensors[f"{name}.weight"] = NeutralTensor(layer.kernel, CONV)
            elif isinstance(layer, keras.layers.Dense):
                tensors[f"{name}.weight"] = NeutralTensor(layer.kernel, DENSE)
                tensors[f"{name}.bias"] = NeutralTensor(layer.bias, VECTOR)
            else:
                for suffix, variable in (("weight", layer.gamma), ("bias", layer.beta),
                                         ("running_mean", layer.moving_mean),
                                         ("running_var", layer.moving_variance)):
                    tensors[f"{name}.{suffix}"] = NeutralTensor(variable, VECTOR)
        return tensors


def relu(x):
    """ReLU as its own layer (no weights, so no neutral name)."""
    return keras.layers.ReLU()(x)


def _keras_name(neutral: str) -> str:
    # Keras layer names must be unique and are used in variable paths: dots are swapped out.
    return neutral.replace(".", "_")
