"""The --shuffle-labels control permutes training and validation labels and leaves test labels true."""

from __future__ import annotations

import numpy as np

from harness.benchmark import shuffled_labels


def test_shuffle_permutes_rows_within_the_given_indices_only():
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 14)) < 0.2).astype(np.uint8)
    original = labels.copy()
    fit = np.arange(0, 150)
    test = np.arange(150, 200)
    shuffled = shuffled_labels(labels, fit, seed=0)
    assert np.array_equal(shuffled[test], labels[test])  # test labels untouched
    assert not np.array_equal(shuffled[fit], labels[fit])  # training labels moved
    # The same label rows, only reassigned to other images.
    assert sorted(map(bytes, shuffled[fit])) == sorted(map(bytes, labels[fit]))
    assert np.array_equal(shuffled_labels(labels, fit, seed=0), shuffled)  # deterministic
    assert np.array_equal(labels, original)  # the store's labels are never modified
