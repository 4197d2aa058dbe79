"""Datasets: each turns its source into one pixel store (uint8 pixels + labels + patient ids).

A dataset is named on the command line as `phantom` (built in), `nih:PATH` (an NIH ChestX-ray14
tree) or `chestmnist:PATH` (a MedMNIST .npz file, or a folder of them).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from harness.data.pixel_store import DatasetArrays, PixelStore, open_or_build
from harness.progress import progress_bar

DATASETS = ("phantom", "nih", "chestmnist")
DATASET_FORMS = "phantom, nih:PATH (an NIH ChestX-ray14 folder) or chestmnist:PATH (a MedMNIST .npz file or folder)"
# Bump whenever the phantom generator changes its output, so cached stores are not reused.
PHANTOM_GENERATOR_VERSION = 2


def parse_dataset(spec: str) -> tuple[str, Path | None]:
    """Split a dataset spec into its kind and path; ValueError naming --dataset when it is malformed."""
    kind, separator, path = spec.partition(":")
    if kind not in DATASETS:
        raise ValueError(f"--dataset: unknown {spec!r} (known: {DATASET_FORMS})")
    if kind == "phantom":
        if separator:
            raise ValueError(f"--dataset: 'phantom' takes no path (got {spec!r})")
        return kind, None
    if not path:
        raise ValueError(f"--dataset: {kind} needs the path to the data, e.g. {kind}:/data/{kind}")
    return kind, Path(path).expanduser()


def load_dataset(name: str, image_size: int, seed: int, cache: Path, patients: int | None = None,
                 skip_bad: bool = False) -> PixelStore:
    """Open (preparing and caching on first use) the pixel store of a dataset spec."""
    kind, path = parse_dataset(name)
    if kind == "nih":
        from harness.data.datasets.nih import prepare_nih

        assert path is not None  # parse_dataset gives every kind but phantom a path
        return prepare_nih(path, image_size, cache, skip_bad=skip_bad).store
    if kind == "chestmnist":
        from harness.data.datasets.chestmnist import load_chestmnist

        assert path is not None
        return load_chestmnist(path, image_size, cache)
    return _phantom(image_size, seed, cache, patients)


def _phantom(image_size: int, seed: int, cache: Path, patients: int | None) -> PixelStore:
    from harness.data.datasets.phantom import LABELS, PhantomConfig, generate_phantom

    config = PhantomConfig(seed=seed, image_size=image_size, **({"patients": patients} if patients else {}))
    source = {"dataset": "phantom", "generator_version": PHANTOM_GENERATOR_VERSION, **asdict(config)}

    def build() -> DatasetArrays:
        with progress_bar(desc=f"phantom {image_size}px, seed {seed}", unit="img", leave=False) as bar:
            data = generate_phantom(config, progress=bar.update)
        prevalence = {label: {"reference": ref, "used": used} for label, (ref, used) in data.prevalence.items()}
        boxes = (f"{len(data.boxes):,} bounding boxes on {len(set(data.boxes[:, 0].tolist())):,} images, "
                 "one per planted finding, around where the phantom drew it")
        return DatasetArrays(
            pixels=data.pixels, labels=data.labels, patient_ids=data.patient_ids, sample_ids=data.sample_ids,
            label_names=LABELS, boxes=data.boxes,
            notes={"kind": "synthetic phantom", "config": asdict(config), "prevalence": prevalence,
                   "bounding_boxes": boxes},
        )

    return open_or_build(cache, source, build)
