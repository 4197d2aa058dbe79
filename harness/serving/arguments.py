"""`harness predict`'s arguments, apart from its handler: the command line imports this to build its parser,
and the heavy modules (OpenCV, pydicom, the runtimes) only when `predict` runs."""

from __future__ import annotations

import argparse
from pathlib import Path

DEVICES = ("auto", "cpu", "cuda")


def add_predict_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the `predict` subcommand to `subparsers`."""
    parser = subparsers.add_parser(
        "predict", help="read radiographs (PNG, JPEG, DICOM) with registered models; print a table, write a CSV",
        description="Decode each image as the upload page does, give it to every model named, print each model's "
                    "14 probabilities per image (* where at or above the model's threshold) and write them to a "
                    "CSV: image, model, label, probability, threshold, flagged.")
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="PNG, JPEG or DICOM files")
    parser.add_argument("--model", action="append", required=True, dest="models", metavar="REF",
                        help="a registered model: NAME@ALIAS, NAME/VERSION or NAME (its latest version); repeatable")
    parser.add_argument("--registry", default=None, metavar="URI",
                        help="the MLflow registry (default: the SQLite one under results/)")
    parser.add_argument("--out", type=Path, default=Path("predictions.csv"), metavar="CSV",
                        help="where to write the predictions (default: predictions.csv in the current folder)")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where the workers run; auto: cuda where this host has a CUDA device, else cpu")
