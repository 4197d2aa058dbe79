"""The harness's class activation maps equal each framework's own (DESIGN invariant 6, localisation).

For each framework worker: the harness starts it, configures ResNet-50 at 64 px, sends its starting
weights and asks FeatureMaps for one image; the harness computes the CAM from those maps and the
starting head weight (harness.evaluation.cams). Then a short script, run in that worker's own
environment, builds the network directly in its framework from the same safetensors file, takes the
final feature maps there (PyTorch: a forward hook on torchvision's layer4; TensorFlow: the worker's
tf.nn layers called one by one; Keras: a model cut at the input of GlobalAveragePooling2D) and computes
the CAM with the framework's own einsum and head weight. Both must agree within fp32 rounding.

Tolerance: max|harness - framework| <= 1e-5 x max|CAM| (relative difference as parity measures it).
Both sides run on the CPU (GPUs hidden), in fp32, from the same weights and pixels; what differs is
float32 rounding: the CAM sums 2048 products, in float32 in the framework and in float64 in the
harness, from maps the worker and the script each computed. Measured on this project's CPU (max |CAM|
19.5): PyTorch 8.8e-7 (max abs 1.7e-5), TensorFlow 1.2e-6 (2.3e-5), Keras 1.5e-6 (3.0e-5); printed
with -s. A wrong layer, channel order or head would be off by order 1.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cxrbench.worker.v1.tensors import make_batch
from cxrbench_worker.neutral_weights import weights_from_bytes
from harness.config import BenchmarkConfig, cache_root
from harness.evaluation.cams import class_activation_maps
from harness.models.weights.start import starting_weights
from harness.runtime.environments import ensure_environment
from harness.runtime.local import WORKER_PYTHONPATH, LocalWorker
from harness.runtime.registry import discover_workers
from harness.training.parity import relative_difference
from harness.training.settings import IMAGENET_MEAN, IMAGENET_STD, configure_request

pytestmark = pytest.mark.framework

SIZE, LABELS = 64, 14
CAM_RELATIVE = 1e-5
THREADS = 2
CPU_ONLY = {"CUDA_VISIBLE_DEVICES": ""}  # worker and script on the same kind of device

# Each script: argv = pixels.npy, weights.safetensors, out.npy, JSON [mean, std]; writes the CAM
# (N, L, h, w) float32 computed by the framework itself.
PYTORCH = """
import json, sys
import numpy as np, torch, torchvision
from safetensors.numpy import load_file
pixels, weights, out, (mean, std) = np.load(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
torch.set_num_threads(2)
model = torchvision.models.resnet50(weights=None)
model.fc = torch.nn.Linear(2048, 14)
missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in load_file(weights).items()},
                                            strict=False)
assert not unexpected and all(name.endswith("num_batches_tracked") for name in missing), (missing, unexpected)
model.eval()
maps = []
model.layer4.register_forward_hook(lambda module, inputs, output: maps.append(output))
x = torch.from_numpy(pixels).float().div(255).unsqueeze(1).expand(-1, 3, -1, -1)
x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
with torch.no_grad():
    model(x)
    cam = torch.einsum("nchw,lc->nlhw", maps[0], model.fc.weight)
np.save(out, cam.numpy())
"""

TENSORFLOW = """
import json, sys
import numpy as np, tensorflow as tf
from cxrbench_worker.neutral_weights import weights_from_bytes
from cxrbench_tensorflow.model import build_model, import_neutral
pixels, weights, out, (mean, std) = np.load(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
net = build_model("resnet50", 14, seed=0, mean=tuple(mean), std=tuple(std))
with open(weights, "rb") as file:
    import_neutral(net, weights_from_bytes(file.read()))
body = net.body
x = (tf.cast(pixels, tf.float32)[..., tf.newaxis] / 255.0 - mean) / std
x = body.max_pool(tf.nn.relu(body.bn1(body.conv1(x), False)))  # torchvision's conv1, bn1, relu, maxpool
for block in body.blocks:  # layer1 .. layer4
    x = block(x, False)
cam = tf.einsum("nhwc,cl->nlhw", x, body.fc.weight)  # the head's kernel is stored (in, out)
np.save(out, cam.numpy())
"""

KERAS = """
import json, os, sys
os.environ["KERAS_BACKEND"] = "tensorflow"
import keras, numpy as np
from cxrbench_worker.neutral_weights import weights_from_bytes
from cxrbench_keras.model import build_model
pixels, weights, out, (mean, std) = np.load(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
net = build_model("resnet50", 14, pixels.shape[1], mean, std)
with open(weights, "rb") as file:
    net.import_weights(weights_from_bytes(file.read()))
pool = next(layer for layer in net.model.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D))
maps = keras.Model(net.model.inputs, pool.input)(pixels, training=False)
cam = keras.ops.einsum("nhwc,cl->nlhw", maps, net.model.get_layer("fc").kernel)
np.save(out, keras.ops.convert_to_numpy(cam))
"""

SCRIPTS = {"pytorch": PYTORCH, "tensorflow": TENSORFLOW, "keras": KERAS}


@pytest.fixture(scope="module")
def start(tmp_path_factory) -> bytes:
    """The harness-made ResNet-50 starting weights (seed 0), as every worker receives them."""
    return starting_weights("random", "resnet50", LABELS, 0, tmp_path_factory.mktemp("weights")).data


def one_image() -> np.ndarray:
    """A smooth image (blurred noise), radiograph-like, (1, SIZE, SIZE) uint8."""
    coarse = np.random.default_rng(17).random((1, SIZE // 8, SIZE // 8))
    return (np.kron(coarse, np.ones((8, 8))) * 255).astype(np.uint8)


def harness_cam(name: str, start: bytes, pixels: np.ndarray, log: Path) -> np.ndarray:
    """The CAM as the harness computes it: the worker's FeatureMaps and the starting head weight."""
    folder = discover_workers()[name]
    worker = LocalWorker(folder, ensure_environment(folder, cache_root()), log, CPU_ONLY)
    try:
        client = worker.start()
        config = BenchmarkConfig(workers=name, architecture="resnet50", image_size=SIZE, seed=0, threads=THREADS)
        client.configure(configure_request(config.training(name), LABELS))
        client.set_weights(start)
        features, _, _ = client.feature_maps(iter([make_batch(0, pixels)]))
    finally:
        worker.stop()  # before the framework's own script starts: one framework in memory at a time
    return class_activation_maps(features, weights_from_bytes(start)["fc.weight"])


def framework_cam(name: str, start: bytes, pixels: np.ndarray, where: Path) -> np.ndarray:
    """The CAM as the framework computes it, in the worker's own environment."""
    folder = discover_workers()[name]
    python = ensure_environment(folder, cache_root()).python
    (where / "weights.safetensors").write_bytes(start)
    np.save(where / "pixels.npy", pixels)
    path = os.pathsep.join(str(p) for p in (*WORKER_PYTHONPATH, folder.path))
    env = {**os.environ, "PYTHONPATH": path, **folder.environment, **CPU_ONLY}
    result = subprocess.run(
        [str(python), "-c", SCRIPTS[name], str(where / "pixels.npy"), str(where / "weights.safetensors"),
         str(where / "cam.npy"), json.dumps([IMAGENET_MEAN, IMAGENET_STD])],
        env=env, cwd=where, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return np.load(where / "cam.npy")


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_the_harness_cam_equals_the_frameworks_own(name, start, tmp_path):
    pixels = one_image()
    ours = harness_cam(name, start, pixels, tmp_path / f"{name}.log")
    theirs = framework_cam(name, start, pixels, tmp_path)
    assert ours.shape == theirs.shape == (1, LABELS, 2, 2) and theirs.dtype == np.float32
    difference = relative_difference(ours, theirs)
    print(f"{name}: CAM max abs {np.max(np.abs(ours.astype(np.float64) - theirs)):.3g} of max |CAM| "
          f"{np.max(np.abs(theirs)):.3g}, relative {difference:.2e}")
    assert difference <= CAM_RELATIVE
