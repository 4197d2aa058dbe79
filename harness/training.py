"""Training and evaluation of one worker, driven entirely by the harness.

The worker only steps and predicts. The harness decides the order of batches, computes validation
loss and AUROC from the logits it collects, logs every epoch as it ends and computes test metrics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from cxrbench.worker.v1 import worker_pb2
from harness.augmentation import AugmentedPixels
from harness.batches import (
    epoch_order,
    evaluation_chunks,
    order_digest,
    prediction_batches,
    training_batches,
    training_chunks,
)
from harness.client import WorkerClient
from harness.config import IMAGENET_MEAN, IMAGENET_STD, BenchmarkConfig
from harness.metrics import bce_with_logits, evaluate, macro_auroc
from harness.pixel_store import PixelStore
from harness.prefetch import Prefetch
from harness.results import RunDirectory
from harness.splits import Split


@dataclass(frozen=True)
class TrainingData:
    """What the harness feeds every worker alike."""

    store: PixelStore
    split: Split
    fit_labels: np.ndarray  # labels for training and validation (shuffled in the control run), indexed like the store


def configure_request(config: BenchmarkConfig, num_labels: int, worker: str = "") -> worker_pb2.ConfigureRequest:
    """The Configure request for a run; the same for every worker but for its own --option switches."""
    return worker_pb2.ConfigureRequest(
        architecture=config.architecture,
        num_labels=num_labels,
        image_size=config.image_size,
        seed=config.seed,
        optimizer=worker_pb2.AdamOptimizer(
            learning_rate=config.learning_rate, beta1=0.9, beta2=0.999, epsilon=1e-8, weight_decay=0.0
        ),
        numerics=worker_pb2.Numerics(precision=config.precision, allow_tf32=False, deterministic=config.deterministic),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        threads=config.threads,
        options=config.worker_options(worker),
    )


def predict_set(client: WorkerClient, store: PixelStore, indices: np.ndarray, batch_size: int) -> tuple[np.ndarray, dict]:
    """Logits of `indices` (in index order) and the timing of the prediction pass."""
    batches = Prefetch(prediction_batches(store.pixels, evaluation_chunks(indices, batch_size)))
    start = time.perf_counter()
    try:
        logits, compute = client.predict(batches)
    finally:
        batches.close()
    seconds = time.perf_counter() - start
    return logits, {"seconds": seconds, "images_per_second": len(indices) / seconds if seconds else None,
                    "compute_seconds": compute}


def train_epoch(client: WorkerClient, config: BenchmarkConfig, data: TrainingData, epoch: int, fold_text: str = "") -> dict:
    """Stream one epoch of training batches; returns losses, digests and timing."""
    order = epoch_order(data.split.train, config.seed, epoch)
    chunks = training_chunks(order, config.batch_size)
    # Augmented in the prefetch thread, from (seed, epoch, sample) alone: the same bytes for every worker.
    pixels = AugmentedPixels(data.store.pixels, config.augmentation, config.seed, epoch)
    batches = Prefetch(training_batches(pixels, data.fit_labels, chunks))
    losses, digests, compute = [], [], 0.0
    first_step = None
    start = time.perf_counter()
    bar = tqdm(total=len(chunks) * config.batch_size, desc=f"{client.name}{fold_text} epoch {epoch}/{config.epochs}",
               unit="img", leave=False, dynamic_ncols=True)
    try:
        for step in client.train(batches):
            if first_step is None:
                first_step = time.perf_counter() - start
            losses.append(step.loss)
            digests.append(step.digest)
            compute += step.compute_seconds
            bar.update(config.batch_size)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", refresh=False)
    finally:
        batches.close()
        bar.close()
    seconds = time.perf_counter() - start
    images = len(chunks) * config.batch_size
    return {
        "train_loss": float(np.mean(losses)) if losses else float("nan"),
        "seconds": seconds,
        "train_images_per_second": images / seconds if seconds else None,
        "compute_images_per_second": images / compute if compute else None,
        "first_step_seconds": first_step,
        "batch_order_sha256": order_digest(digests),
        "images": images,
    }


def train_and_evaluate(client: WorkerClient, config: BenchmarkConfig, data: TrainingData, run: RunDirectory,
                       configured: worker_pb2.ConfigureResponse, fold: int | None = None) -> dict:
    """Train a configured worker every epoch and evaluate it; returns its results (plain values).

    `fold` (1-based) names the cross-validation fold; its logits go to logits/<worker>/fold<k>/.
    """
    name = client.name
    logits_dir = f"logits/{name}" if fold is None else f"logits/{name}/fold{fold}"
    fold_text = "" if fold is None else f" fold {fold}"
    store, split = data.store, data.split
    validation_labels = data.fit_labels[split.validation]
    epochs = []
    for epoch in range(1, config.epochs + 1):
        trained = train_epoch(client, config, data, epoch, fold_text)
        logits, _ = predict_set(client, store, split.validation, config.eval_batch_size)
        run.save_array(f"{logits_dir}/validation_epoch_{epoch:03d}.npy", logits)
        row = {
            "worker": name,
            "fold": fold or "",
            "epoch": epoch,
            "learning_rate": config.learning_rate,
            "validation_loss": bce_with_logits(logits, validation_labels),
            "validation_macro_auroc": macro_auroc(logits, validation_labels),
            **{key: value for key, value in trained.items() if key != "images"},
        }
        run.append_epoch(row)
        epochs.append(row)
        tqdm.write(
            f"{name}{fold_text} epoch {epoch}/{config.epochs}: loss {row['train_loss']:.4f}, validation loss "
            f"{row['validation_loss']:.4f}, validation AUROC {row['validation_macro_auroc']:.3f}, "
            f"{row['seconds']:.0f} s ({row['train_images_per_second']:.0f} img/s)"
        )
    test_logits, prediction = predict_set(client, store, split.test, config.eval_batch_size)
    run.save_array(f"{logits_dir}/test.npy", test_logits)
    weights = client.get_weights()
    steady = [row["seconds"] for row in epochs[1:]] or [epochs[0]["seconds"]]
    return {
        **({"fold": fold} if fold else {}),
        "test": evaluate(test_logits, store.labels[split.test], store.label_names),
        "parameters": {
            "trainable": configured.trainable_parameters,
            "non_trainable": configured.non_trainable_parameters,
        },
        "numerics": dict(configured.numerics),
        "model_size_bytes": {"neutral_safetensors": len(weights)},
        "efficiency": {
            "seconds_per_epoch_median": float(np.median([row["seconds"] for row in epochs])),
            "seconds_per_epoch_after_first_median": float(np.median(steady)),
            "train_images_per_second_median": float(np.median([row["train_images_per_second"] for row in epochs])),
            "compute_images_per_second_median": float(np.median([row["compute_images_per_second"] for row in epochs])),
            "first_step_seconds": epochs[0]["first_step_seconds"],
            "prediction_images_per_second": prediction["images_per_second"],
        },
        "batch_order_sha256": [row["batch_order_sha256"] for row in epochs],
    }
