"""The page's serving path on this machine: one 224-px radiograph through three frameworks, and the memory.

    .venv/bin/python benchmarks/app_latency.py [--workers pytorch,tensorflow,keras] [--size 224] [--repeats 5]

Serves ResNet-50 models through `harness.serving.ModelPool` exactly as `harness app` does (one worker per
model, FeatureMaps with the maps computed by the harness), with the harness's starting weights (latency
and memory do not depend on the weights' values, so nothing needs training first). Prints each model's
cold start, then the warm latency of one image through all three models in turn (the page's order),
with and without maps, as median (range) over the repeats, and the resident memory of each worker and of
this process (the page's) with the three models loaded. Figures, not a test: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from radiograph_files import chest_like  # noqa: E402  (the tests' plausible radiograph)

from harness.config import cache_root  # noqa: E402
from harness.data.datasets.labels import CHESTXRAY14_LABELS  # noqa: E402
from harness.model_registry.registered import RegisteredModel  # noqa: E402
from harness.models.weights.start import starting_weights  # noqa: E402
from harness.serving.pool import ModelPool  # noqa: E402
from harness.serving.served_model import local_runtime  # noqa: E402


def models(workers: list[str], size: int, folder: Path) -> dict[str, RegisteredModel]:
    """One RegisteredModel per worker: ResNet-50 with the harness's seed-0 starting weights at `size` px."""
    path = folder / "model.safetensors"
    path.write_bytes(starting_weights("random", "resnet50", len(CHESTXRAY14_LABELS), 0, cache_root()).data)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    made = {}
    for worker in workers:
        card = {"worker": worker, "architecture": "resnet50", "image_size": size, "labels": list(CHESTXRAY14_LABELS),
                "thresholds": [0.5] * len(CHESTXRAY14_LABELS), "weights_sha256": digest, "precision": "fp32"}
        made[f"cxrbench-resnet50-{worker}/1"] = RegisteredModel(f"cxrbench-resnet50-{worker}", 1, (), card, path)
    return made


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="pytorch,tensorflow,keras")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    image = chest_like(args.size, 0)[np.newaxis]
    with tempfile.TemporaryDirectory(prefix="cxrbench-latency-") as folder:
        known = models(args.workers.split(","), args.size, Path(folder))
        with ModelPool(resolve=known.__getitem__, runtime_factory=local_runtime("cpu")) as pool:
            for reference in known:
                began = time.perf_counter()
                pool.read(reference, image, maps=True)
                print(f"{reference}: cold start (worker start, Configure, SetWeights, first FeatureMaps) "
                      f"{time.perf_counter() - began:.1f} s")
            for maps in (False, True):
                totals = []
                for _ in range(args.repeats):
                    began = time.perf_counter()
                    for reference in known:
                        pool.read(reference, image, maps=maps)
                    totals.append(time.perf_counter() - began)
                what = "probabilities and maps (FeatureMaps)" if maps else "probabilities (Predict)"
                print(f"one {args.size}-px image through {len(known)} models, {what}: {_spread(totals)} "
                      f"over {args.repeats} repeats")
            memory = pool.memory()
            for reference, rss in memory.items():
                print(f"{reference}: worker resident memory {rss / 2**20:,.0f} MiB")
            own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            print(f"page process (this one) peak resident memory {own / 2**20:,.0f} MiB; "
                  f"total with {len(memory)} models loaded {(sum(memory.values()) + own) / 2**30:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
