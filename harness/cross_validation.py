"""Folds into one result: every fold's metrics kept, and their mean +- std across folds.

The summary has the same shape as a single-fold result (`test` holds the means), plus `test_std`
and the per-fold results under `folds`, so the report reads either alike.
"""

from __future__ import annotations

import math

import numpy as np

SCALARS = ("macro_auroc", "precision", "recall", "f1", "loss")


def _mean_std(values: list) -> tuple[float | None, float | None]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None, None
    # Sample standard deviation (ddof=1): the folds are a sample of possible splits.
    return float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0


def summarize_tests(tests: list[dict]) -> tuple[dict, dict]:
    """Mean and std across folds of each test metric (scalars and per-label AUROC)."""
    mean, std = dict(tests[0]), {}
    for key in SCALARS:
        mean[key], std[key] = _mean_std([test[key] for test in tests])
    mean["auroc"], std["auroc"] = {}, {}
    for label in tests[0]["auroc"]:
        mean["auroc"][label], std["auroc"][label] = _mean_std([test["auroc"][label] for test in tests])
    mean["unscorable_labels"] = sorted({name for test in tests for name in test["unscorable_labels"]})
    return mean, std


def combine_folds(fold_results: list[dict]) -> dict:
    """One worker's result over its folds; a single fold is returned as it is."""
    if len(fold_results) == 1:
        return fold_results[0]
    first = fold_results[0]
    test, test_std = summarize_tests([result["test"] for result in fold_results])
    efficiency = {key: float(np.median([r["efficiency"][key] for r in fold_results if r["efficiency"][key] is not None]))
                  for key in first["efficiency"]}
    return {
        "test": test,
        "test_std": test_std,
        "folds": fold_results,
        "parameters": first["parameters"],
        "numerics": first["numerics"],
        "model_size_bytes": first["model_size_bytes"],
        "efficiency": efficiency,  # medians across folds
        "batch_order_sha256": [digest for result in fold_results for digest in result["batch_order_sha256"]],
    }
