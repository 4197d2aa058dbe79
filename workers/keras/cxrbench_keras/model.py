"""ResNet-50 and DenseNet-121 as torchvision defines them, built from keras.layers and keras.ops.

The model takes uint8 grayscale pixels (N, H, W) and returns float32 logits (N, num_labels); the
preprocessing is a layer inside it, so pixels cross to the device as uint8. Weights go in and out in
the neutral format: torchvision's state_dict names and layouts, minus `num_batches_tracked`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np

from cxrbench_worker.backend import check_architecture, check_num_labels
from cxrbench_worker.neutral_weights import check_tensors

from .builder import NetworkBuilder, NeutralTensor
from .densenet import densenet121
from .resnet import resnet50
from .torch_layers import GrayscaleToImage

_BUILDERS: dict[str, Callable[[object, int], tuple[object, object, NetworkBuilder]]] = {
    "resnet50": resnet50,
    "densenet121": densenet121,
}


@dataclass(frozen=True)
class NeutralModel:
    """A Keras model, the neutral name -> variable mapping recorded while building it, and a second
    model over the same layers whose outputs are [final feature maps float32 NCHW, logits]."""

    model: keras.Model
    tensors: dict[str, NeutralTensor]
    feature_model: keras.Model

    def export_weights(self) -> dict[str, np.ndarray]:
        """Every neutral tensor as a float32 copy in torchvision's layout."""
        return {name: tensor.read() for name, tensor in self.tensors.items()}

    def import_weights(self, arrays: dict[str, np.ndarray]) -> None:
        """Assign neutral weights; ValueError naming missing, unexpected or misshapen tensors.

        Nothing is assigned unless every tensor is present and well shaped.
        """
        expected = self.tensors
        check_tensors({name: tensor.neutral_shape() for name, tensor in expected.items()}, arrays)
        for name, tensor in expected.items():
            tensor.write(arrays[name])


def build_model(architecture: str, num_labels: int, image_size: int,
                mean: Sequence[float], std: Sequence[float]) -> NeutralModel:
    """Build `architecture` with a `num_labels`-logit head, initialised as torchvision does.

    The initial weights come from Keras's global seed: call keras.utils.set_random_seed first.
    Raises UnsupportedOption for an unknown architecture, ValueError for num_labels < 1.
    """
    check_architecture(architecture, _BUILDERS)
    check_num_labels(num_labels)
    build = _BUILDERS[architecture]
    pixels = keras.Input(shape=(image_size, image_size), dtype="uint8", name="pixels")
    features, logits, builder = build(GrayscaleToImage(mean, std, name="normalize")(pixels), num_labels)
    model = keras.Model(pixels, logits, name=architecture)
    # Channels first, as torchvision lays them out, and float32 under any policy (as the logits are);
    # these two layers lie off the path to the logits, so `model` does not contain them.
    channels_first = keras.layers.Permute((3, 1, 2), dtype="float32", name="features_nchw_float32")(features)
    feature_model = keras.Model(pixels, [channels_first, logits], name=f"{architecture}_feature_maps")
    return NeutralModel(model, builder.neutral_tensors(), feature_model)


def count_parameters(model: keras.Model) -> tuple[int, int]:
    """(trainable, non_trainable) element counts as Keras itself lists the model's weights.

    Non-trainable are the BatchNorm moving mean and variance, PyTorch's running_mean / running_var.
    """
    def total(weights: list) -> int:
        return sum(int(np.prod(w.shape)) for w in weights)

    return total(model.trainable_weights), total(model.non_trainable_weights)
