"""The harness's canonical architectures and starting weights.

- the parameter counts of the canonical descriptions equal reference/parameter_counts.json;
- initial weights are a function of the seed alone and follow torchvision's initialisation scheme
  (compared against torchvision itself, in the PyTorch worker's interpreter);
- `--init imagenet=PATH` converts a torchvision checkpoint once, keeps its backbone exactly and gives
  it the run's 14-logit head; a wrong file is refused with the tensors at fault named.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import reference_parameter_counts
from cxrbench_worker.neutral_weights import weights_from_bytes
from harness.models.architectures import ARCHITECTURE_NAMES, architecture
from harness.runtime.registry import discover_workers
from harness.config import cache_root
from harness.runtime.environments import ensure_environment
from harness.models.weights.initial import initial_weights
from harness.models.weights.start import starting_weights

FACTS_PARAMETERS = reference_parameter_counts()


@pytest.mark.parametrize("arch", ARCHITECTURE_NAMES)
def test_canonical_parameter_counts_equal_the_reference(arch):
    assert architecture(arch, 14).counts() == FACTS_PARAMETERS[arch]


def test_the_reference_holds_every_architecture_and_the_published_resnet50_count():
    assert set(FACTS_PARAMETERS) == set(ARCHITECTURE_NAMES)
    assert FACTS_PARAMETERS["resnet50"] == (23_536_718, 53_120)


def test_starting_weights_depend_on_the_seed_alone(tmp_path):
    first = starting_weights("random", "resnet50", 14, 3, tmp_path)
    again = starting_weights("random", "resnet50", 14, 3, tmp_path)
    other = starting_weights("random", "resnet50", 14, 4, tmp_path)
    assert first.data == again.data and first.sha256 == again.sha256
    assert other.sha256 != first.sha256
    tensors = weights_from_bytes(first.data)
    assert {n: t.shape for n, t in tensors.items()} == architecture("resnet50", 14).shapes()
    assert all(t.dtype == np.float32 for t in tensors.values())


# Run by the PyTorch worker's interpreter: per-tensor statistics of torchvision's own initialisation.
TORCHVISION_STATISTICS = r"""
import json, sys, torch, torchvision
torch.manual_seed(0)
found = {}
for arch, head in (("resnet50", "fc"), ("densenet121", "classifier")):
    model = getattr(torchvision.models, arch)(weights=None)
    setattr(model, head, torch.nn.Linear(getattr(model, head).in_features, 14))
    if arch == "densenet121":
        torch.nn.init.constant_(model.classifier.bias, 0)  # as torchvision's constructor does for its head
    found[arch] = {name: [float(t.float().mean()), float(t.float().std()) if t.numel() > 1 else 0.0,
                          float(t.float().min()), float(t.float().max())]
                   for name, t in model.state_dict().items() if not name.endswith("num_batches_tracked")}
json.dump(found, sys.stdout)
"""


@pytest.mark.framework
def test_initial_weights_follow_torchvisions_scheme():
    python = ensure_environment(discover_workers()["pytorch"], cache_root()).python
    done = subprocess.run([str(python), "-c", TORCHVISION_STATISTICS], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    reference = json.loads(done.stdout)
    for arch in ARCHITECTURE_NAMES:
        ours = initial_weights(architecture(arch, 14), seed=0)
        assert set(ours) == set(reference[arch])
        for name, tensor in ours.items():
            mean, std, low, high = reference[arch][name]
            if std == 0.0:  # constants: BatchNorm 1 / 0, running statistics, a zeroed bias
                assert np.all(tensor == mean), name
            elif tensor.size >= 1000:  # enough draws for the spread to be a property of the scheme
                assert tensor.std() == pytest.approx(std, rel=0.05), name
                assert abs(tensor.mean()) <= 0.05 * std, name
            else:  # ResNet's head bias: nn.Linear's uniform default, bound 1/sqrt(in_features)
                spec = architecture(arch, 14)
                bound = 1 / np.sqrt(spec.shapes()[f"{spec.head}.weight"][1]) + 1e-7
                assert np.abs(tensor).max() <= bound and max(abs(low), abs(high)) <= bound, name


MAKE_IMAGENET_CHECKPOINTS = r"""
import sys, torch, torchvision
torch.manual_seed(1)
for arch in ("resnet50", "densenet121"):
    model = getattr(torchvision.models, arch)(weights=None)  # 1000 ImageNet classes, like the real files
    torch.save(model.state_dict(), f"{sys.argv[1]}/{arch}.pth")
"""


@pytest.fixture(scope="module")
def imagenet_checkpoints(tmp_path_factory) -> Path:
    """torchvision-format checkpoints with a 1000-class head, written by real torch."""
    python = ensure_environment(discover_workers()["pytorch"], cache_root()).python
    folder = tmp_path_factory.mktemp("imagenet")
    done = subprocess.run([str(python), "-c", MAKE_IMAGENET_CHECKPOINTS, str(folder)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return folder


@pytest.mark.framework
@pytest.mark.parametrize("arch", ARCHITECTURE_NAMES)
def test_imagenet_checkpoint_keeps_its_backbone_and_gets_the_runs_head(imagenet_checkpoints, tmp_path, arch):
    from harness.models.weights.torch_checkpoint import read_torch_checkpoint

    path = imagenet_checkpoints / f"{arch}.pth"
    made = starting_weights(f"imagenet={path}", arch, 14, 0, tmp_path)
    tensors = weights_from_bytes(made.data)
    spec = architecture(arch, 14)
    assert {n: t.shape for n, t in tensors.items()} == spec.shapes()
    original = read_torch_checkpoint(path)
    for name, tensor in tensors.items():
        if name.startswith(f"{spec.head}."):
            assert tensor.shape[0] == 14
        else:
            np.testing.assert_array_equal(tensor, original[name])
    assert made.source["checkpoint_sha256"] and "ImageNet backbone" in made.describe()
    # Converted once: the cached backbone is reused, and gives the same bytes.
    assert len(list((tmp_path / "weights").glob(f"{arch}-imagenet-*.safetensors"))) == 1
    assert starting_weights(f"imagenet={path}", arch, 14, 0, tmp_path).data == made.data


@pytest.mark.framework
def test_a_checkpoint_of_the_wrong_architecture_is_refused_by_name(imagenet_checkpoints, tmp_path):
    path = imagenet_checkpoints / "densenet121.pth"
    with pytest.raises(ValueError, match=r"not a torchvision resnet50 checkpoint: \d+ missing: .*conv1\.weight"):
        starting_weights(f"imagenet={path}", "resnet50", 14, 0, tmp_path)


def test_a_missing_checkpoint_says_nothing_is_downloaded(tmp_path):
    with pytest.raises(ValueError, match="no such file.*never downloads"):
        starting_weights(f"imagenet={tmp_path / 'absent.pth'}", "resnet50", 14, 0, tmp_path)
