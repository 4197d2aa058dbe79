"""The NIH tree generators of benchmarks/: the real images-per-patient histogram, and a small full-pipeline run."""

from __future__ import annotations

import os

import numpy as np

from benchmarks import make_nih_tree
from benchmarks.nih_tree import counts_from_histogram
from harness.data.datasets.nih_boxes import read_nih_boxes
from harness.data.datasets.nih_index import read_nih_index


def test_counts_from_the_real_histogram_reproduce_it_exactly():
    counts = counts_from_histogram(make_nih_tree.IMAGES_PER_PATIENT, 30805, 112120)
    assert len(counts) == 30805 and counts.sum() == 112120
    values, patients = np.unique(counts, return_counts=True)
    assert dict(zip(values.tolist(), patients.tolist())) == make_nih_tree.IMAGES_PER_PATIENT


def test_counts_for_other_totals_hit_them_with_at_least_one_image_each():
    counts = counts_from_histogram(make_nih_tree.IMAGES_PER_PATIENT, 50, 90, seed=1)
    assert len(counts) == 50 and counts.sum() == 90 and counts.min() >= 1


def test_make_nih_tree_writes_an_indexable_tree_of_hard_linked_pool_images(tmp_path, capsys):
    root = tmp_path / "nih"
    summary = make_nih_tree.main(["--root", str(root), "--patients", "12", "--images", "40", "--image-size", "32",
                                  "--pool", "3", "--layout", "flat", "--boxed-images", "5"])  # fmt: skip
    index = read_nih_index(root)
    assert len(index) == 40 and len(set(index.patient_ids.tolist())) == 12
    assert index.notes["image_layouts"] == ["images"] and not (root / ".pool").exists()
    assert len({os.stat(p).st_ino for p in index.image_paths}) <= 3  # hard links to the pool
    assert summary["images"] == 40 and summary["official_test_images"] == int(index.official_test.sum())
    boxes = read_nih_boxes(index)  # every written box passes the reader's checks
    assert len(set(boxes.rows.tolist())) == 5 and summary["boxes"] == len(boxes) >= 5
    assert "mean PNG size" in capsys.readouterr().out
