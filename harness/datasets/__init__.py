"""Datasets: each turns its source into one pixel store (uint8 pixels + labels + patient ids)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from harness.pixel_store import DatasetArrays, PixelStore, open_or_build

DATASETS = ("phantom",)
# Bump whenever the phantom generator changes its output, so cached stores are not reused.
PHANTOM_GENERATOR_VERSION = 2


def load_dataset(name: str, image_size: int, seed: int, cache: Path, patients: int | None = None) -> PixelStore:
    """Open (building and caching on first use) the pixel store of a dataset."""
    if name != "phantom":
        raise ValueError(
            f"--dataset: '{name}' is not available yet (known: {', '.join(DATASETS)}); "
            "NIH ChestX-ray14 and ChestMNIST readers are planned"
        )
    from harness.datasets.phantom import LABELS, PhantomConfig, generate_phantom

    config = PhantomConfig(seed=seed, image_size=image_size, **({"patients": patients} if patients else {}))
    source = {"dataset": "phantom", "generator_version": PHANTOM_GENERATOR_VERSION, **asdict(config)}

    def build() -> DatasetArrays:
        with tqdm(desc=f"phantom {image_size}px, seed {seed}", unit="img", leave=False) as bar:
            data = generate_phantom(config, progress=bar.update)
        prevalence = {label: {"reference": ref, "used": used} for label, (ref, used) in data.prevalence.items()}
        return DatasetArrays(
            pixels=data.pixels, labels=data.labels, patient_ids=data.patient_ids, sample_ids=data.sample_ids,
            label_names=LABELS, boxes=data.boxes,
            notes={"kind": "synthetic phantom", "config": asdict(config), "prevalence": prevalence},
        )

    return open_or_build(cache, source, build)
