"""The class activation maps of a run's kept model, for the images that have boxes.

After the test set is scored, the worker that holds the kept checkpoint is asked for the final
feature maps (FeatureMaps: the tensor global average pooling reduces) of every boxed test and
validation image. The harness computes the maps itself (harness.evaluation.cams) from those features
and the head weights of the checkpoint it already holds, so every worker's maps come from one formula.

What is saved per run, `cams/<worker>/<run folder>/{test,validation}.npz` (compressed):
    sample_index  int64 (n,): the images, in store order
    cams          float32 (n, L, h, w): raw maps at the feature maps' resolution (no bias, no upsampling);
                  scoring upsamples and thresholds them, so `harness report` can rescore with other rules
    logits        float32 (n, L): the logits of the same forward pass
At most MAX_IMAGES images per part, so a run's maps stay under MAX_IMAGES x L x h x w x 4 bytes per part
(about 2.7 MB at 224 px) before compression.
"""

from __future__ import annotations

import io

import numpy as np
from safetensors.numpy import load as load_safetensors

from harness.data.batches import evaluation_chunks, prediction_batches
from harness.data.pixel_store import PixelStore
from harness.data.splits import Split
from harness.evaluation.cams import class_activation_maps
from harness.models.architectures import architecture
from harness.records.run_directory import RunDirectory
from harness.runtime.client import WorkerClient

# Small batches: a batch of ResNet-50 maps at 224 px is 400 KB per image on the wire.
FEATURE_BATCH_SIZE = 8
MAX_IMAGES = 1000  # per part (test, validation): the bound on what a run saves
# The logits of FeatureMaps' forward pass against those of Predict (the same model, the same images):
# both are one eval-mode pass of one program; more than this means the maps are not the scored model's.
LOGITS_AGREEMENT = 1e-3


def boxed_images(store: PixelStore, indices: np.ndarray, limit: int = MAX_IMAGES) -> np.ndarray:
    """The images of `indices` that have at least one box, in store order, at most `limit` of them."""
    boxed = np.unique(np.asarray(store.boxes)[:, 0]) if len(store.boxes) else np.zeros(0, np.int64)
    return np.intersect1d(np.asarray(indices, np.int64), boxed.astype(np.int64))[:limit]


def head_weight(weights: bytes, architecture_name: str, num_labels: int) -> np.ndarray:
    """The linear head's weight (L, C) from a neutral safetensors file (torchvision's name for it)."""
    name = f"{architecture(architecture_name, num_labels).head}.weight"
    tensors = load_safetensors(weights)
    if name not in tensors:
        raise ValueError(f"the kept checkpoint holds no head weight {name!r}")
    return np.asarray(tensors[name], np.float32)


def _maps(client: WorkerClient, store: PixelStore, indices: np.ndarray, head: np.ndarray,
          threads: int) -> tuple[np.ndarray, np.ndarray]:
    batches = prediction_batches(store.pixels, evaluation_chunks(indices, FEATURE_BATCH_SIZE), threads)
    try:
        features, logits, _ = client.feature_maps(batches)
    finally:
        batches.close()
    return class_activation_maps(features, head), logits


def _save(run_dir: RunDirectory, relative: str, indices: np.ndarray, cams: np.ndarray, logits: np.ndarray) -> None:
    path = run_dir.path / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, sample_index=indices.astype(np.int64), cams=cams.astype(np.float32),
                        logits=logits.astype(np.float32))
    path.write_bytes(buffer.getvalue())


def localize_run(client: WorkerClient, store: PixelStore, split: Split, weights: bytes, architecture_name: str,
                 run_dir: RunDirectory, folder: str, test_logits: np.ndarray, threads: int = 1) -> dict | None:
    """Save the maps of the boxed test and validation images of the model the worker holds now (the kept
    checkpoint, whose bytes are `weights`); returns what was saved, or None when no test image has a box.

    `test_logits` are Predict's logits of `split.test`: FeatureMaps' logits must agree with them, or the
    maps would not be those of the scored model (RuntimeError).
    """
    test_images = boxed_images(store, split.test)
    if not len(test_images):
        return None
    head = head_weight(weights, architecture_name, store.labels.shape[1])
    saved: dict = {"folder": folder, "images": {}}
    for part, indices in (("test", test_images), ("validation", boxed_images(store, split.validation))):
        if not len(indices):
            continue
        cams, logits = _maps(client, store, indices, head, threads)
        if part == "test":
            predicted = test_logits[np.searchsorted(np.asarray(split.test), indices)]
            deviation = float(np.max(np.abs(logits - predicted))) if logits.size else 0.0
            if not deviation <= LOGITS_AGREEMENT:
                raise RuntimeError(f"{client.name}: the logits of FeatureMaps differ from Predict's by "
                                   f"{deviation:.2e} (> {LOGITS_AGREEMENT}) on the same images: its feature maps "
                                   "are not the scored model's")
            saved["logits_max_abs_deviation"] = deviation
        _save(run_dir, f"{folder}/{part}.npz", indices, cams, logits)
        saved["images"][part] = int(len(indices))
    saved["feature_map"] = list(cams.shape[2:])
    return saved


GALLERY_PER_FINDING = 2  # test images per finding shown in the report's gallery


def gallery_images(store: PixelStore, test: np.ndarray, per_finding: int = GALLERY_PER_FINDING) -> np.ndarray:
    """For each finding with boxes on test images, its first `per_finding` boxed test images (store order);
    the union, sorted."""
    boxes = np.asarray(store.boxes)
    on_test = boxes[np.isin(boxes[:, 0], test)] if len(boxes) else boxes
    chosen: set[int] = set()
    for label in np.unique(on_test[:, 1]) if len(on_test) else ():
        chosen.update(int(i) for i in np.unique(on_test[on_test[:, 1] == label, 0])[:per_finding])
    return np.array(sorted(chosen), np.int64)


def save_box_data(run_dir: RunDirectory, store: PixelStore, test: np.ndarray) -> None:
    """What scoring and the gallery need beside each run's maps, saved once per study:
    localization/boxes.npy (every box of the store: sample, label, x, y, w, h at the stored size) and
    localization/gallery.npz (the gallery's test images: sample_index, pixels, and per_finding: how many
    were chosen per finding)."""
    run_dir.save_array("localization/boxes.npy", np.asarray(store.boxes, np.int32))
    chosen = gallery_images(store, test)
    path = run_dir.path / "localization" / "gallery.npz"
    np.savez_compressed(path, sample_index=chosen, pixels=np.asarray(store.pixels[chosen]),
                        per_finding=GALLERY_PER_FINDING)
