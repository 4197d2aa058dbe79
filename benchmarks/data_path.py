"""Data-path benchmark: how fast the harness feeds a worker over the real gRPC path.

The null worker receives each batch, decodes it, recomputes and checks its digest, and does
nothing else, so the figure is the ceiling the harness puts on any worker. Training batches are
augmented on the way (random flip and rotation up to 20 degrees by default, as in a benchmark
run). Target on a 2-core machine: at least 3,000 img/s at 224x224 (an H100 trains ResNet-50 at
about 2,800 img/s in mixed precision; the harness must never be the reason a GPU waits).

    .venv/bin/python benchmarks/data_path.py [--images 8192] [--batch-size 256] [--image-size 224] [--augment none]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from harness.data.augmentation import Augmentation, AugmentedPixels
from harness.data.batches import epoch_order, evaluation_chunks, prediction_batches, training_batches, training_chunks
from harness.data.prefetch import Prefetch
from harness.runtime.registry import discover_workers
from harness.runtime.environments import ensure_environment
from harness.runtime.local import LocalWorker
from harness.training.settings import configure_request
from harness.config import BenchmarkConfig, cache_root

TARGET_IMAGES_PER_SECOND = 3000


def make_store(folder: Path, images: int, image_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random pixels in a memory-mapped file (as the real pixel store is) and random labels."""
    path = folder / "pixels.u8"
    pixels = np.memmap(path, dtype=np.uint8, mode="w+", shape=(images, image_size, image_size))
    rng = np.random.default_rng(seed)
    for start in range(0, images, 1024):
        stop = min(start + 1024, images)
        pixels[start:stop] = rng.integers(0, 256, size=(stop - start, image_size, image_size), dtype=np.uint8)
    pixels.flush()
    labels = (rng.random((images, 14)) < 0.1).astype(np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r", shape=pixels.shape), labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--augment", default="flip,rotate=20", help="augmentation of training batches (default: flip,rotate=20)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cxrbench-datapath-") as scratch:
        return run(args, Path(scratch))


def run(args: argparse.Namespace, scratch: Path) -> int:
    """Stream the store through the null worker `args.repeats` times; print and check img/s."""
    pixels, labels = make_store(scratch, args.images, args.image_size, seed=0)
    indices = np.arange(args.images)
    folder = discover_workers()["null"]
    log = scratch / "null.log"
    config = BenchmarkConfig(workers="null", image_size=args.image_size, batch_size=args.batch_size)
    augmentation = Augmentation.parse(args.augment)
    print(f"data path: {args.images} images of {args.image_size}x{args.image_size}, batches of {args.batch_size}, "
          f"{args.repeats} repeats, null worker over a Unix socket; augmentation: {augmentation.describe()}")
    train_rates, predict_rates = [], []
    with LocalWorker(folder, ensure_environment(folder, cache_root()), log) as worker:
        client = worker.start()
        client.configure(configure_request(config.training(), num_labels=14))
        for repeat in range(args.repeats):
            chunks = training_chunks(epoch_order(indices, seed=0, epoch=repeat), args.batch_size)
            batches = Prefetch(training_batches(AugmentedPixels(pixels, augmentation, 0, repeat), labels, chunks))
            start = time.perf_counter()
            steps = sum(1 for _ in client.train(batches))
            seconds = time.perf_counter() - start
            train_rates.append(steps * args.batch_size / seconds)

            batches = Prefetch(prediction_batches(pixels, evaluation_chunks(indices, args.batch_size)))
            start = time.perf_counter()
            logits, _ = client.predict(batches)
            seconds = time.perf_counter() - start
            predict_rates.append(len(logits) / seconds)
            print(f"  repeat {repeat + 1}: train path {train_rates[-1]:,.0f} img/s, predict path {predict_rates[-1]:,.0f} img/s")
    megabytes = args.image_size * args.image_size / 1e6
    train, predict = float(np.median(train_rates)), float(np.median(predict_rates))
    print(f"train path (augmented pixels + labels, digest checked): median {train:,.0f} img/s ({train * megabytes:,.0f} MB/s)")
    print(f"predict path (pixels, digest checked, logits back): median {predict:,.0f} img/s ({predict * megabytes:,.0f} MB/s)")
    verdict = "meets" if train >= TARGET_IMAGES_PER_SECOND else "MISSES"
    print(f"{verdict} the target of {TARGET_IMAGES_PER_SECOND:,} img/s on the train path")
    return 0 if train >= TARGET_IMAGES_PER_SECOND else 1


if __name__ == "__main__":
    sys.exit(main())
