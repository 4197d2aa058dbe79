"""`harness predict` (harness.serving.command) with null-worker models: the table, the CSV, bad images."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest
from radiograph_files import chest_like, png_bytes
from registered_models import EXPECTED_FLAGS, THRESHOLDS, CountingRuntimes, registered_model, write_weights

from harness.data.datasets.labels import CHESTXRAY14_LABELS
from harness.serving.command import add_predict_parser, run_predict
from harness.serving.pool import ModelPool
from harness.serving.predictions import CSV_COLUMNS

MODELS = ("dense@champion", "small/2")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    weights = write_weights(tmp_path_factory.mktemp("densenet121"))
    return {"dense@champion": registered_model(weights, name="dense", image_size=64),
            "small/2": registered_model(weights, name="small", version=2, aliases=(), image_size=96)}


@pytest.fixture
def pool(models, tmp_path):
    with ModelPool(runtime_factory=CountingRuntimes(), resolve=models.__getitem__, log_dir=tmp_path / "logs") as pool:
        yield pool


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="harness")
    add_predict_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["predict", *argv])


def images(folder: Path, count: int, size: int = 128) -> list[Path]:
    """`count` chest-like 8-bit PNG files, larger than both models' input size (each is resized down)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"chest{i}.png" for i in range(count)]
    for i, path in enumerate(paths):
        path.write_bytes(png_bytes(chest_like(size, seed=i)))
    return paths


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_predict_prints_a_table_and_writes_a_row_per_image_model_and_label(pool, tmp_path, capsys):
    files = images(tmp_path / "in", 2)
    out = tmp_path / "out" / "readings.csv"
    args = parse(["--model", MODELS[0], "--model", MODELS[1], "--out", str(out), *map(str, files)])
    assert run_predict(args, pool) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert lines[0] == f"{files[0]} (PNG 8-bit grayscale)"
    assert lines[1].split() == ["finding", *MODELS]
    # Each model's probability, starred where it reaches that model's threshold (0.5 >= 0.4 and 0.5).
    assert lines[2].split() == ["Atelectasis", "0.500*", "0.500*"]
    assert lines[2 + 13].split() == ["Hernia", "0.500*", "0.500*"]
    assert lines[2 + 7].split() == ["Pneumothorax", "0.500", "0.500"]
    assert f"{files[1]} (PNG 8-bit grayscale)" in lines
    assert f"Wrote 56 rows (2 images x 2 models x each model's findings) to {out}" in printed
    rows = read_csv(out)
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 2 * 2 * 14
    assert [(r["image"], r["model"]) for r in rows[::14]] == [(str(f), m) for f in files for m in MODELS]
    assert [r["label"] for r in rows[:14]] == list(CHESTXRAY14_LABELS)
    assert {r["probability"] for r in rows} == {"0.5"}
    assert [float(r["threshold"]) for r in rows[:14]] == list(THRESHOLDS)
    assert [r["flagged"] == "true" for r in rows[14:28]] == list(EXPECTED_FLAGS)


def test_a_bad_image_is_reported_by_name_and_skipped_while_the_others_are_predicted(pool, tmp_path, capsys):
    good = images(tmp_path, 2)
    text = tmp_path / "notes.png"
    text.write_text("not an image at all\n")
    small = tmp_path / "small.png"
    small.write_bytes(png_bytes(chest_like(80)))  # enough for the 64 px model, too small for the 96 px one
    missing = tmp_path / "missing.png"
    out = tmp_path / "predictions.csv"
    files = [good[0], text, small, missing, good[1]]
    args = parse(["--model", MODELS[0], "--model", MODELS[1], "--out", str(out), *map(str, files)])
    assert run_predict(args, pool) == 1
    printed = capsys.readouterr()
    errors = printed.err.splitlines()
    assert errors[0].startswith(f"harness predict: skipped {text}: ")
    assert errors[1] == (f"harness predict: skipped {small}: too small: 80 x 80 px; this model reads 96 x 96 px "
                         "images; upload the radiograph at full resolution (model small/2)")
    assert errors[2] == f"harness predict: skipped {missing}: cannot read it: No such file or directory"
    assert errors[-1] == "harness predict: 3 of 5 images skipped (see above)"
    assert {row["image"] for row in read_csv(out)} == {str(good[0]), str(good[1])}
    assert str(text) not in printed.out and f"{good[1]} (PNG 8-bit grayscale)" in printed.out


def test_the_csv_goes_to_predictions_csv_in_the_current_folder_by_default(pool, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = images(tmp_path / "in", 1)
    assert run_predict(parse(["--model", MODELS[0], str(files[0])]), pool) == 0
    assert f"to {tmp_path / 'predictions.csv'}" in capsys.readouterr().out
    assert len(read_csv(tmp_path / "predictions.csv")) == 14


def test_nothing_is_written_when_no_image_can_be_read(pool, tmp_path, capsys):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    out = tmp_path / "predictions.csv"
    assert run_predict(parse(["--model", MODELS[0], "--out", str(out), str(empty)]), pool) == 1
    assert "no image could be read; nothing was predicted" in capsys.readouterr().err
    assert not out.exists() and pool.loaded() == []  # no worker started for nothing


def test_the_parser_requires_a_model_and_an_image(capsys):
    with pytest.raises(SystemExit):
        parse(["chest.png"])
    assert "--model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["--model", "m"])
    args = parse(["--model", "m", "--model", "n", "--device", "cpu", "a.png"])
    assert args.models == ["m", "n"] and args.device == "cpu" and args.out == Path("predictions.csv")
    assert args.registry is None and args.images == [Path("a.png")]

