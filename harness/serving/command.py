"""`harness predict`: registered models' readings of radiograph files, as a table and a CSV.

Each file is decoded as the upload page decodes it (harness.data.uploads: PNG, JPEG or DICOM, then
exactly the training data's resizing to each model's image size). A file that cannot be read is
reported by name and skipped; the others are still predicted, and the command exits 1 at the end.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from harness.data.uploads import MAX_UPLOAD_BYTES, BadUpload, decode_upload, model_input
from harness.serving.arguments import add_predict_parser  # noqa: F401  (re-exported: tests build the parser here)
from harness.serving.pool import ModelPool
from harness.serving.predictions import table, write_csv
from harness.serving.served_model import ServedModel, local_runtime


def _read_file(path: Path) -> bytes:
    """The file's bytes, reading at most one byte past the size limit (decode_upload refuses it then),
    so a huge file is never read whole."""
    with open(path, "rb") as file:
        return file.read(MAX_UPLOAD_BYTES + 1)


def decode_images(paths: list[Path], models: list[ServedModel]) -> tuple[dict[str, dict[int, np.ndarray]],
                                                                           dict[str, str], list[str]]:
    """Decode each file and resize it to every model's image size.

    Returns (image -> image size -> uint8 (size, size) pixels, image -> how it was decoded, the reasons
    the files that could not be used were skipped). Images are named by their path as given."""
    inputs: dict[str, dict[int, np.ndarray]] = {}
    notes: dict[str, str] = {}
    skipped: list[str] = []
    for path in paths:
        name = str(path)
        try:
            radiograph = decode_upload(path.name, _read_file(path))
            resized: dict[int, np.ndarray] = {}
            for model in models:
                try:
                    resized[model.image_size] = model_input(radiograph, model.image_size)
                except BadUpload as error:  # too small for this model: say which one
                    raise BadUpload(f"{error.reason} (model {model.reference})") from None
        except BadUpload as error:
            skipped.append(f"{name}: {error.reason}")
            continue
        except OSError as error:
            skipped.append(f"{name}: cannot read it: {error.strerror or error}")
            continue
        inputs[name] = resized
        notes[name] = radiograph.source + (f"; {radiograph.note}" if radiograph.note else "")
    return inputs, notes, skipped


def run_predict(args: argparse.Namespace, pool: ModelPool | None = None) -> int:
    """Handle `harness predict`; 0, or 1 when an image was skipped (the others are still written).

    `pool`: where the models are served (tests give one with their own resolver); by default a pool
    over `--registry` on `--device`, closed (its workers stopped) before returning."""
    references = list(dict.fromkeys(args.models))  # each model once, in the order given
    own_pool = pool is None
    serving = pool or ModelPool(args.registry, runtime_factory=local_runtime(args.device))
    try:
        models = [serving.served(reference) for reference in references]  # unknown models fail before any work
        inputs, notes, skipped = decode_images(list(args.images), models)
        for reason in skipped:
            print(f"harness predict: skipped {reason}", file=sys.stderr)
        images = list(inputs)
        if not images:
            print("harness predict: no image could be read; nothing was predicted", file=sys.stderr)
            return 1
        readings = [serving.read(reference, np.stack([inputs[image][model.image_size] for image in images]))
                    for reference, model in zip(references, models, strict=True)]
    finally:
        if own_pool:
            serving.close()
    print(table(images, readings, notes))
    rows = write_csv(args.out, images, readings)
    print(f"Wrote {rows} rows ({len(images)} image{'s' if len(images) > 1 else ''} x {len(readings)} "
          f"model{'s' if len(readings) > 1 else ''} x each model's findings) to {args.out.resolve()}")
    if skipped:
        print(f"harness predict: {len(skipped)} of {len(args.images)} images skipped (see above)", file=sys.stderr)
        return 1
    return 0
