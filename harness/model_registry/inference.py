"""A worker made ready to answer for a registered model: configured as its card says, its weights checked and set.

Shared by registration (which asks the worker for its framework's own export of the weights) and by serving
(`harness predict`, the page), so a model is loaded the one way everywhere.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cxrbench.worker.v1 import worker_pb2
from harness.runtime.client import WorkerClient
from harness.training.settings import IMAGENET_MEAN, IMAGENET_STD


def inference_request(card: dict) -> worker_pb2.ConfigureRequest:
    """Configure for the card's network: architecture, image size, labels; fp32, deterministic kernels.

    The optimizer is never stepped (no Train call), so its settings do not matter; ImageNet statistics
    normalise the pixels as in training (`harness.training.settings`).
    """
    return worker_pb2.ConfigureRequest(
        architecture=card["architecture"], num_labels=len(card["labels"]), image_size=int(card["image_size"]),
        seed=0, optimizer=worker_pb2.AdamOptimizer(learning_rate=1e-4, beta1=0.9, beta2=0.999, epsilon=1e-8),
        numerics=worker_pb2.Numerics(precision="fp32", allow_tf32=False, deterministic=True),
        mean=IMAGENET_MEAN, std=IMAGENET_STD, threads=0)


def checked_weights(path: Path, card: dict) -> bytes:
    """The weights file's bytes, refused (ValueError naming the file) unless their SHA-256 is the card's."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != card["weights_sha256"]:
        raise ValueError(f"{path}: SHA-256 {digest[:16]}... is not the model card's {card['weights_sha256'][:16]}...; "
                         "the registered weights were changed or damaged")
    return data


def load_model(client: WorkerClient, card: dict, weights_path: Path) -> None:
    """Configure `client` for the card's model and load its checked weights (the worker checks the transfer)."""
    data = checked_weights(weights_path, card)
    client.configure(inference_request(card))
    client.set_weights(data)
