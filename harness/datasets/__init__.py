"""Datasets: each turns its source into one pixel store (uint8 pixels + labels + patient ids)."""

from __future__ import annotations

from pathlib import Path

from harness.pixel_store import DatasetArrays, PixelStore, open_or_build

DATASETS = ("phantom",)
# Bumped whenever the phantom generator changes its output, so cached stores are not reused.
PHANTOM_GENERATOR_VERSION = 1


def load_dataset(name: str, image_size: int, seed: int, cache: Path, patients: int | None = None) -> PixelStore:
    """Open (building and caching on first use) the pixel store of a dataset."""
    if name != "phantom":
        raise ValueError(
            f"--dataset: '{name}' is not available yet (known: {', '.join(DATASETS)}); "
            "NIH ChestX-ray14 and ChestMNIST readers are planned"
        )
    from harness.datasets.phantom import PhantomConfig, generate_phantom

    config = PhantomConfig(seed=seed, image_size=image_size, **({"patients": patients} if patients else {}))
    source = {"dataset": "phantom", "generator_version": PHANTOM_GENERATOR_VERSION, **config.__dict__}

    def build() -> DatasetArrays:
        data = generate_phantom(config)
        floors = {name: {"reference": ref, "used": used} for name, (ref, used) in data.prevalence.items()}
        return DatasetArrays(
            pixels=data.pixels, labels=data.labels, patient_ids=data.patient_ids, sample_ids=data.sample_ids,
            label_names=tuple(data.label_names) if hasattr(data, "label_names") else _phantom_labels(),
            boxes=data.boxes,
            notes={"kind": "synthetic phantom", "config": config.__dict__, "prevalence": floors},
        )

    return open_or_build(cache, source, build)


def _phantom_labels() -> tuple[str, ...]:
    from harness.datasets.phantom import LABELS

    return tuple(LABELS)
