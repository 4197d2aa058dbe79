"""torchvision's ResNet-50 (v1.5) and DenseNet-121 with a multi-label linear head.

torchvision's parameter names and layouts are the project's neutral weight format, so the models are
used unchanged apart from the classifier, which keeps its torchvision name (`fc` / `classifier`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models

from cxrbench_worker.backend import check_architecture, check_num_labels


def _resnet50(num_labels: int) -> nn.Module:
    # v1.5: stride on the 3x3 conv, no conv biases, BatchNorm eps 1e-5 / momentum 0.1 (defaults).
    model = models.resnet50(weights=None)
    model.fc = nn.Linear(model.fc.in_features, num_labels)
    return model


def _densenet121(num_labels: int) -> nn.Module:
    model = models.densenet121(weights=None)
    model.classifier = nn.Linear(model.classifier.in_features, num_labels)
    return model


_BUILDERS: dict[str, Callable[[int], nn.Module]] = {
    "resnet50": _resnet50,
    "densenet121": _densenet121,
}


def build_model(architecture: str, num_labels: int) -> nn.Module:
    """Build `architecture` with a `num_labels`-logit linear head, randomly initialised.

    The initial weights are torchvision's init drawn from torch's global RNG: seed before calling.
    Raises UnsupportedOption for an unknown architecture, ValueError for num_labels < 1.
    """
    check_architecture(architecture, _BUILDERS)
    check_num_labels(num_labels)
    return _BUILDERS[architecture](num_labels)


def features_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The final feature maps (N, C, h, w) and the logits of one forward pass through `model`.

    The same ops, in the same order, as torchvision's own forward, so the logits are bit-equal to
    `model(x)`'s: ResNet's features are layer4's output, DenseNet's relu(features(x)).
    """
    if isinstance(model, models.ResNet):
        x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        features = model.layer4(model.layer3(model.layer2(model.layer1(x))))
        return features, model.fc(torch.flatten(model.avgpool(features), 1))
    if isinstance(model, models.DenseNet):
        features = F.relu(model.features(x))
        return features, model.classifier(torch.flatten(F.adaptive_avg_pool2d(features, (1, 1)), 1))
    raise TypeError(f"no feature maps for {type(model).__name__}: ResNet or DenseNet expected")


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """Return (trainable, non_trainable) element counts.

    Non-trainable counts BatchNorm running_mean and running_var only: `num_batches_tracked` is a
    bookkeeping counter, not a weight, and other frameworks have no equivalent, so counting it would
    break parameter-count parity.
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    buffers = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            buffers += _numel(module.running_mean) + _numel(module.running_var)
    return trainable, frozen + buffers


def _numel(tensor: torch.Tensor | None) -> int:
    return 0 if tensor is None else tensor.numel()
