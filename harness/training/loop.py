"""Training and evaluation of one worker, driven entirely by the harness.

The worker only steps and predicts. The harness decides the order of batches, computes validation
loss and AUROC from the logits it collects, and from that loss alone decides the learning rate,
the checkpoint kept and when to stop (harness.training.schedule); it logs every epoch as it ends, restores
the chosen checkpoint, and scores the test set.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np

from cxrbench.worker.v1 import worker_pb2
from cxrbench_worker.worker_labels import safe_label
from harness.data.augmentation import AugmentedPixels
from harness.data.batches import (
    epoch_order,
    evaluation_chunks,
    order_digest,
    prediction_batches,
    training_batches,
    training_chunks,
)
from harness.data.pixel_store import PixelStore
from harness.data.splits import Split
from harness.evaluation.metrics import bce_with_logits, best_f1_thresholds, evaluate, macro_auroc
from harness.progress import announce, progress_bar
from harness.records.run_directory import RunDirectory
from harness.runtime.client import WorkerClient
from harness.training.localize import localize_run
from harness.training.schedule import EpochDecision, TrainingSchedule
from harness.training.settings import TrainingSettings


@dataclass(frozen=True)
class TrainingData:
    """What the harness feeds every worker alike."""

    store: PixelStore
    split: Split
    fit_labels: np.ndarray  # labels for training and validation (shuffled in the control run), indexed like the store
    # The digests of epoch 1's first batches as the study's driver built them (harness.study.first_batch_digests):
    # the worker must echo them, or the node that built these batches read other bytes.
    first_digests: tuple[str, ...] = ()


class BatchMismatch(RuntimeError):
    """A run's batches are not the bytes the study's driver built: the comparison would be void."""


@dataclass(frozen=True)
class TrainingRun:
    """One of a worker's runs: a training seed and a cross-validation fold (None without folds).

    The training seed fixes the starting weights (chosen by the caller), the batch order and the
    augmentation; the data, the test set and the folds come from the data seed and never change.
    """

    seed: int
    fold: int | None
    folder: str  # under logits/<worker>/: "", "fold2", "seed1" or "seed1/fold2"

    @property
    def name(self) -> str:
        """How the run is named in logs and reports, e.g. "seed 1, fold 2" ("" for a lone run)."""
        parts = [f"seed {self.seed}"] if "seed" in self.folder else []
        return ", ".join(parts + ([f"fold {self.fold}"] if self.fold else []))


def predict_set(
    client: WorkerClient, store: PixelStore, indices: np.ndarray, batch_size: int, threads: int = 1
) -> tuple[np.ndarray, dict]:
    """Logits of `indices` (in index order) and the timing of the prediction pass (batches built on `threads`)."""
    batches = prediction_batches(store.pixels, evaluation_chunks(indices, batch_size), threads)
    start = time.perf_counter()
    try:
        logits, compute = client.predict(batches)
    finally:
        batches.close()
    seconds = time.perf_counter() - start
    return logits, {"seconds": seconds, "images_per_second": len(indices) / seconds if seconds else None,
                    "compute_seconds": compute}


def train_epoch(client: WorkerClient, settings: TrainingSettings, data: TrainingData, seed: int, epoch: int,
                run_text: str = "") -> dict:
    """Stream one epoch of training batches; returns losses, digests and timing.

    Throughput leaves out each epoch's first step (warm-up: graph tracing, compilation, autotuning,
    the stream's start), which is reported on its own as `first_step_seconds`.
    """
    order = epoch_order(data.split.train, seed, epoch)
    chunks = training_chunks(order, settings.batch_size)
    # Augmented on the batch-building threads, from (seed, epoch, sample) alone: the same bytes for every worker.
    pixels = AugmentedPixels(data.store.pixels, settings.augmentation, seed, epoch)
    batches = training_batches(pixels, data.fit_labels, chunks, settings.data_threads)
    losses: list[float] = []
    digests: list[str] = []
    compute: list[float] = []
    first_step = None
    start = time.perf_counter()
    bar = progress_bar(total=len(chunks) * settings.batch_size,
                       desc=f"{client.name}{run_text} epoch {epoch}/{settings.epochs}", unit="img", leave=False)
    expected = data.first_digests if epoch == 1 else ()
    try:
        for step in client.train(batches):
            if first_step is None:
                first_step = time.perf_counter() - start
            if len(digests) < len(expected) and step.digest != expected[len(digests)]:
                raise BatchMismatch(
                    f"{client.name}{run_text}: batch {len(digests)} of epoch 1 has digest {step.digest[:12]}, but the "
                    f"study's driver built {expected[len(digests)][:12]}: this node builds other bytes (its pixel "
                    "store, labels or code differ)")
            losses.append(step.loss)
            digests.append(step.digest)
            compute.append(step.compute_seconds)
            bar.update(settings.batch_size)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", refresh=False)
    finally:
        batches.close()
        bar.close()
    seconds = time.perf_counter() - start
    steady_images = (len(chunks) - 1) * settings.batch_size
    steady_seconds, steady_compute = seconds - (first_step or 0.0), sum(compute[1:])
    return {
        "train_loss": float(np.mean(losses)) if losses else float("nan"),
        "seconds": seconds,
        "train_images_per_second": steady_images / steady_seconds if steady_images and steady_seconds > 0 else None,
        "compute_images_per_second": steady_images / steady_compute if steady_images and steady_compute > 0 else None,
        "first_step_seconds": first_step,
        "batch_order_sha256": order_digest(digests),
        "images": len(chunks) * settings.batch_size,
    }


def energy_counter(client: WorkerClient) -> float | None:
    """The worker's cumulative GPU energy counter, joules; None where its hardware does not tell."""
    usage = client.resource_usage()
    return float(usage["device_energy_joules"]) if usage.get("energy_reported") else None


def run_energy(joules_per_epoch: list[float | None], images: int) -> dict | None:
    """A run's energy from each epoch's training (counter after minus before) and the images trained;
    None unless every epoch was measured."""
    if not joules_per_epoch or any(joules is None for joules in joules_per_epoch):
        return None
    total = sum(joules for joules in joules_per_epoch if joules is not None)
    return {"joules_per_epoch": joules_per_epoch, "joules_per_image": total / images if images else None}


def _announce(name: str, decision: EpochDecision, row: dict, epochs: int) -> None:
    events = ((["checkpoint"] if decision.checkpoint else [])
              + ([f"learning rate {decision.learning_rate:g} -> {decision.next_learning_rate:g}"]
                 if decision.lr_changed else [])
              + (["early stop"] if decision.stop and decision.epoch < epochs else []))
    speed = row["train_images_per_second"]
    announce(
        f"{name} epoch {decision.epoch}/{epochs}: loss {row['train_loss']:.4f}, validation loss "
        f"{row['validation_loss']:.4f}, validation AUROC {row['validation_macro_auroc']:.3f}, "
        f"{row['seconds']:.0f} s ({'n/a' if speed is None else f'{speed:.0f}'} img/s)"
        + (f"; {', '.join(events)}" if events else "")
    )


def train_and_evaluate(client: WorkerClient, settings: TrainingSettings, data: TrainingData, run_dir: RunDirectory,
                       configured: worker_pb2.ConfigureResponse, run: TrainingRun,
                       measure_native: bool = False) -> dict:
    """Train a configured worker under the harness's schedule, restore its best checkpoint, evaluate.

    Returns the run's results (plain values). Logits go to logits/<worker>/<run.folder>/ (<worker> in its
    safe form: keras-jax for keras[jax]), class activation
    maps of the boxed images (with `settings.localize`) to cams/<worker>/<run.folder>/, the kept checkpoint
    (neutral safetensors) to models/<worker>/<run.folder>/model.safetensors.
    `measure_native` also saves the trained model in the framework's own format to weigh it.
    """
    name = client.name
    folder_name = safe_label(name)  # keras-jax for keras[jax]: no brackets in file names
    logits_dir = "/".join(part for part in (f"logits/{folder_name}", run.folder) if part)
    run_text = f" ({run.name})" if run.name else ""
    store, split = data.store, data.split
    validation_labels = data.fit_labels[split.validation]
    schedule = TrainingSchedule(settings.schedule, settings.learning_rate, settings.epochs)
    client.resource_usage(reset_peak=True)  # the peaks below are this run's
    best_weights: bytes | None = None
    rows, predictions = [], []
    joules: list[float | None] = []  # each epoch's training, from the worker's GPU energy counter
    for epoch in range(1, settings.epochs + 1):
        energy_before = energy_counter(client)
        trained = train_epoch(client, settings, data, run.seed, epoch, run_text)
        energy_after = energy_counter(client)
        # A counter that went backwards (the driver reloaded) measured nothing.
        joules.append(energy_after - energy_before if energy_before is not None and energy_after is not None
                      and energy_after >= energy_before else None)
        logits, predicted = predict_set(client, store, split.validation, settings.eval_batch_size,
                                         settings.data_threads)
        predictions.append(predicted["images_per_second"])
        run_dir.save_array(f"{logits_dir}/validation_epoch_{epoch:03d}.npy", logits)
        validation_loss = bce_with_logits(logits, validation_labels)
        decision = schedule.after_epoch(epoch, validation_loss)
        if decision.checkpoint:
            best_weights = client.get_weights()
        if decision.lr_changed:
            client.set_learning_rate(decision.next_learning_rate)
        row = {
            "worker": name, "seed": run.seed, "fold": run.fold or "", "epoch": epoch,
            "learning_rate": decision.learning_rate,
            "validation_loss": validation_loss,
            "validation_macro_auroc": macro_auroc(logits, validation_labels),
            "checkpoint": int(decision.checkpoint), "next_learning_rate": decision.next_learning_rate,
            "stopped_early": int(decision.stop and epoch < settings.epochs),
            "prediction_images_per_second": predicted["images_per_second"],
            **trained,
        }
        run_dir.append_epoch(row, f"{folder_name}/{run.folder or 'run'}")
        rows.append(row)
        _announce(f"{name}{run_text}", decision, row, settings.epochs)
        if decision.stop:
            break
    chosen = schedule.best_epoch
    if best_weights is not None and chosen != rows[-1]["epoch"]:
        client.set_weights(best_weights)  # the checkpoint with the lowest validation loss is what is tested
    test_logits, prediction = predict_set(client, store, split.test, settings.eval_batch_size, settings.data_threads)
    predictions.append(prediction["images_per_second"])
    run_dir.save_array(f"{logits_dir}/test.npy", test_logits)
    usage = client.resource_usage()
    weights = best_weights if best_weights is not None else client.get_weights()
    # The kept checkpoint, as every worker loads it: `harness register` puts it in the model registry.
    model_path = "/".join(part for part in (f"models/{folder_name}", run.folder) if part) + "/model.safetensors"
    (run_dir.path / model_path).parent.mkdir(parents=True, exist_ok=True)
    (run_dir.path / model_path).write_bytes(weights)
    native = client.export_native() if measure_native else None
    localization = None
    if settings.localize:  # the maps of the kept checkpoint, which the worker holds now
        cams_dir = "/".join(part for part in (f"cams/{folder_name}", run.folder) if part)
        localization = localize_run(client, store, split, weights, settings.architecture, run_dir, cams_dir,
                                    test_logits, settings.data_threads)
    # Per-label thresholds for the tuned F1: chosen on the validation predictions of the kept checkpoint.
    chosen_logits = np.load(run_dir.path / logits_dir / f"validation_epoch_{(chosen or rows[-1]['epoch']):03d}.npy")
    thresholds, _ = best_f1_thresholds(chosen_logits, validation_labels)
    return {
        "seed": run.seed,
        "fold": run.fold,
        "logits": logits_dir,
        "schedule": {**schedule.summary(), "checkpoint_sha256": hashlib.sha256(weights).hexdigest()},
        "model": model_path,
        "test": evaluate(test_logits, store.labels[split.test], store.label_names, thresholds),
        "parameters": {
            "trainable": configured.trainable_parameters,
            "non_trainable": configured.non_trainable_parameters,
        },
        "numerics": dict(configured.numerics),
        "model_size_bytes": {"neutral_safetensors": len(weights), **({"native": native} if native else {})},
        "timings": {
            "epoch_seconds": [row["seconds"] for row in rows],
            "train_images_per_second": [row["train_images_per_second"] for row in rows],
            "compute_images_per_second": [row["compute_images_per_second"] for row in rows],
            "prediction_images_per_second": predictions,
            "first_step_seconds": rows[0]["first_step_seconds"],
        },
        "memory": usage,
        "energy": run_energy(joules, sum(row["images"] for row in rows)),
        "batch_order_sha256": [row["batch_order_sha256"] for row in rows],
        **({"localization": localization} if localization else {}),
    }
