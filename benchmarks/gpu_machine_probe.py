"""What an interpreter can run for `bin/gpu-check`, asked in that interpreter (not the harness's).

    python benchmarks/gpu_machine_probe.py torch                # torch's version, its CUDA build, the GPU it sees
    python benchmarks/gpu_machine_probe.py frameworks cuda|cpu  # TensorFlow (and its GPUs), Keras, JAX (its GPUs), Flax, Optax

Prints one JSON line. The two questions run in separate processes: TensorFlow's CUDA libraries and
torch's need not load into one. The harness imports no framework, so it runs this file instead.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import sys


def torch_facts() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    return {"torch": torch.__version__, "built_for_cuda": str(torch.version.cuda), "cuda": cuda,
            "gpu": torch.cuda.get_device_name(0) if cuda else None}


def framework_facts(device: str) -> dict:
    found: dict = {}
    if importlib.util.find_spec("tensorflow") is not None:
        import tensorflow as tf

        found["tensorflow"] = tf.__version__
        found["gpus"] = len(tf.config.list_physical_devices("GPU")) if device == "cuda" else 0
    if importlib.util.find_spec("keras") is not None:
        found["keras"] = importlib.metadata.version("keras")
    for package in ("flax", "optax"):
        if importlib.util.find_spec(package) is not None:
            found[package] = importlib.metadata.version(package)
    if importlib.util.find_spec("jax") is not None:
        import jax

        found["jax"] = jax.__version__
        found["jax_gpus"] = len([d for d in jax.devices() if d.platform == "gpu"]) if device == "cuda" else 0
    return found


if __name__ == "__main__":
    question = sys.argv[1] if len(sys.argv) > 1 else ""
    if question == "torch":
        print(json.dumps(torch_facts()))
    elif question == "frameworks" and len(sys.argv) == 3:
        print(json.dumps(framework_facts(sys.argv[2])))
    else:
        sys.exit("usage: gpu_machine_probe.py torch | frameworks cuda|cpu")
