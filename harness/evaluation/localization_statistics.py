"""Uncertainty for the localisation scores: patient-bootstrap intervals, the margin over chance, and
paired comparisons of workers by the project's verdict rules (harness.evaluation.comparison).

Every worker and run is scored on ONE set of patient bootstrap replicates of the test cases
(harness.evaluation.bootstrap.patient_counts; all cases of a drawn patient travel together), so
differences between workers, and between a worker and chance, are paired replicate by replicate.
A metric on a replicate is the weighted mean over cases, each case weighted by the number of times
its patient was drawn. Runs share the test set, so their cases line up case by case.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from harness.evaluation.bootstrap import patient_counts
from harness.evaluation.comparison import ALPHA, DEFAULT_MARGIN, decide, paired_tests, plain
from harness.evaluation.localization import CaseScores
from harness.evaluation.statistics import _pair_stats, _shared_test_variance, percentile_interval

HEADLINE = ("hit_rate", "mask_iou")  # the metrics every pair of workers is compared on


def metric_names(overlap_thresholds: Sequence[float]) -> list[str]:
    """The worker metrics, in order: hit_rate, mask_iou, then per T iobb_accuracy@T, iobb_afp@T,
    iou_accuracy@T, iou_afp@T."""
    return ["hit_rate", "mask_iou"] + [f"{kind}_{what}@{t:g}" for t in overlap_thresholds
                                       for kind in ("iobb", "iou") for what in ("accuracy", "afp")]


def baseline_names(overlap_thresholds: Sequence[float]) -> list[str]:
    """The chance baselines: random_point_hit_rate, centred_box_mask_iou, centred_box_<metric>@T."""
    return ["random_point_hit_rate", "centred_box_mask_iou"] + [
        f"centred_box_{kind}_{what}@{t:g}" for t in overlap_thresholds
        for kind in ("iobb", "iou") for what in ("accuracy", "afp")]


def _columns(scores: CaseScores, prefix: str) -> list[np.ndarray]:
    """Per-case Wang columns in metric_names' order (prefix "" for the maps, "centred_" for chance)."""
    columns: list[np.ndarray] = []
    for t in scores.overlap_thresholds:
        for kind in ("iobb", "iou"):
            columns.append(getattr(scores, f"{prefix}correct_{kind}")[t])
            columns.append(getattr(scores, f"{prefix}false_positives_{kind}")[t])
    return columns


def _worker_values(scores: CaseScores) -> np.ndarray:
    """(C, K) per-case values of metric_names."""
    return np.stack([scores.hit, scores.mask_iou, *_columns(scores, "")], axis=1).astype(np.float64)


def _baseline_values(scores: CaseScores) -> np.ndarray:
    """(C, K) per-case values of baseline_names."""
    return np.stack([scores.random_point_hit, scores.centred_mask_iou, *_columns(scores, "centred_")],
                    axis=1).astype(np.float64)


def _replicate_means(values: np.ndarray, patient: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(1 + B, K): the mean of each column over the cases, weighted by their patient's draws in each row
    of `weights` (1 + B, P) (row 0 draws every patient once: the test set itself). NaN where a
    replicate holds no case."""
    sums = np.zeros((weights.shape[1], values.shape[1]))
    np.add.at(sums, patient, values)
    cases = np.bincount(patient, minlength=weights.shape[1]).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ sums) / (weights @ cases)[:, None]


def _intervals(per_run: np.ndarray, level: float, fold_ratio: float, margin: float) -> list[dict]:
    """One interval per column of per_run (J, 1 + B, K): the estimate (mean over runs on the test set),
    test_low/test_high (percentile interval of the run mean over the replicates: test-set sampling
    alone) and low/high, which with J > 1 runs also cover the run-to-run spread: estimate +- t(J - 1) se,
    se^2 = (1/J + fold_ratio) s^2 + the test set's shared variance, as comparison.paired_tests."""
    runs = per_run.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # columns without a case: NaN is the answer
        estimate = np.nanmean(per_run[:, 0], axis=0)
        test_low, test_high = percentile_interval(per_run[:, 1:].mean(axis=0), level)
    low, high, run_sd = test_low, test_high, np.full(per_run.shape[2], np.nan)
    if runs > 1:
        shared = np.array([_shared_test_variance(per_run[:, 1:, k]) for k in range(per_run.shape[2])])
        rows = paired_tests(per_run[:, 0].T, shared, fold_ratio, level, margin)
        low, high, run_sd = rows["low"], rows["high"], rows["run_sd"]
    covers = "test set and runs" if runs > 1 else "test set"
    return [{"estimate": plain(estimate[k]), "low": plain(low[k]), "high": plain(high[k]),
             "test_low": plain(test_low[k]), "test_high": plain(test_high[k]), "run_sd": plain(run_sd[k]),
             "covers": covers} for k in range(per_run.shape[2])]


def _margin(per_run_hits: np.ndarray, chance: np.ndarray, level: float, fold_ratio: float, margin: float) -> dict:
    """Hit rate minus the random-point hit rate, paired on every replicate; excludes_zero when the
    interval lies wholly above or below 0."""
    interval = _intervals((per_run_hits - chance[None])[:, :, None], level, fold_ratio, margin)[0]
    low, high = interval["low"], interval["high"]
    interval["excludes_zero"] = bool(low is not None and high is not None and (low > 0 or high < 0))
    return interval


def _checked(per_worker: dict[str, list[CaseScores]], patients: int, labels: int) -> CaseScores:
    """The first run of the first worker, after checking that every run scored the same cases."""
    names = list(per_worker)
    if not names or any(len(per_worker[name]) == 0 for name in names):
        raise ValueError("summarise needs at least one worker, each with at least one run of CaseScores")
    runs = {name: len(per_worker[name]) for name in names}
    if len(set(runs.values())) != 1:
        raise ValueError(f"workers have different numbers of runs ({runs}): runs must pair up by seed and fold")
    first = per_worker[names[0]][0]
    if len(first.hit) == 0:
        raise ValueError("there is no localisation case (no test image has a box): nothing to summarise")
    if patients != len(first.hit):
        raise ValueError(f"{patients} patient ids for {len(first.hit)} cases: give one patient id per case")
    if len(first.thresholds) != labels:
        raise ValueError(f"{labels} label names for maps of {len(first.thresholds)} labels")
    for name in names:
        for index, scores in enumerate(per_worker[name]):
            if (not np.array_equal(scores.sample, first.sample) or not np.array_equal(scores.label, first.label)
                    or scores.overlap_thresholds != first.overlap_thresholds):
                raise ValueError(f"worker {name!r}, run {index}: its cases or overlap thresholds differ from "
                                 f"worker {names[0]!r}, run 0: score every run on the same test cases")
    return first


def summarise(per_worker: dict[str, list[CaseScores]], patient_ids_of_cases: np.ndarray, label_names: Sequence[str],
              resamples: int = 1000, seed: int = 0, level: float = 0.95, fold_ratio: float = 0.0,
              margin: float = DEFAULT_MARGIN) -> dict:
    """Localisation metrics of every worker with intervals, chance baselines, each worker's hit-rate
    margin over chance, and every pair of workers compared on hit rate and mean mask IoU; JSON-ready
    plain values (None for NaN), deterministic given `seed`.

    `per_worker[name]` holds the worker's runs in run order (run r of every worker: the same seed
    and fold), each scored on the same test cases; `patient_ids_of_cases` (C,) the patient of each
    case. `fold_ratio` and `margin` as in harness.evaluation.statistics.compare_workers.

    Keys: resamples, level, seed, alpha, unit ("patient"), patients, images, cases, overlap_thresholds,
    metrics (names), baseline_metrics (names), workers (per worker: runs, components, thresholds
    {label: [per run]}, metrics {name: interval}, hit_rate_margin (interval + excludes_zero), findings
    {label: {cases, metrics, hit_rate_margin}}), baselines (metrics, findings {label: {cases,
    metrics}}), comparison (alpha, level, margin, fold_correction, family, pairs: harness.evaluation.
    comparison.decide rows with "metric"), notes. An interval is {estimate, low, high, test_low,
    test_high, run_sd, covers}.
    """
    patients_of_cases = np.asarray(patient_ids_of_cases).reshape(-1)
    first = _checked(per_worker, len(patients_of_cases), len(label_names))
    names, overlaps = list(per_worker), first.overlap_thresholds
    counts, patient = patient_counts(patients_of_cases, resamples, seed)
    weights = np.empty((resamples + 1, counts.shape[1]))
    weights[0], weights[1:] = 1.0, counts
    del counts
    subsets = {None: np.ones(len(first.label), dtype=bool)} | {
        label: first.label == j for j, label in enumerate(label_names)}

    def per_subset(values: np.ndarray) -> dict:
        return {key: _replicate_means(values[chosen], patient[chosen], weights) for key, chosen in subsets.items()}

    baseline = per_subset(_baseline_values(first))  # the truth boxes alone: the same for every worker and run
    metrics, chance_names = metric_names(overlaps), baseline_names(overlaps)

    def labelled(values: list[dict], keys: list[str]) -> dict:
        return dict(zip(keys, values, strict=True))

    workers, headline = {}, {}
    for name in names:
        runs = [per_subset(_worker_values(scores)) for scores in per_worker[name]]
        stacked = {key: np.stack([run[key] for run in runs]) for key in subsets}  # (J, 1 + B, K)
        headline[name] = stacked[None]
        findings = {}
        for label in label_names:
            findings[label] = {
                "cases": int(subsets[label].sum()),
                "metrics": labelled(_intervals(stacked[label], level, fold_ratio, margin), metrics),
                "hit_rate_margin": _margin(stacked[label][:, :, 0], baseline[label][:, 0], level, fold_ratio, margin),
            }
        workers[name] = {
            "runs": len(runs),
            "components": sorted({scores.components for scores in per_worker[name]}),
            "thresholds": {label: [plain(scores.thresholds[j]) for scores in per_worker[name]]
                           for j, label in enumerate(label_names)},
            "metrics": labelled(_intervals(stacked[None], level, fold_ratio, margin), metrics),
            "hit_rate_margin": _margin(stacked[None][:, :, 0], baseline[None][:, 0], level, fold_ratio, margin),
            "findings": findings,
        }
    baselines = {
        "metrics": labelled(_intervals(baseline[None][None], level, fold_ratio, margin), chance_names),
        "findings": {label: {"cases": int(subsets[label].sum()),
                             "metrics": labelled(_intervals(baseline[label][None], level, fold_ratio, margin),
                                                 chance_names)} for label in label_names},
    }
    pairs: list[dict] = []
    variances: list[float] = []
    for k, metric in enumerate(HEADLINE):  # one Holm family: every pair x both headline metrics
        stats, shared = _pair_stats(names, {name: headline[name][:, :, k] for name in names}, fold_ratio, level,
                                    margin)
        pairs += [{"metric": metric, **row} for row in stats]
        variances += shared
    run_count = len(per_worker[names[0]])
    return {
        "resamples": int(resamples), "level": float(level), "seed": int(seed), "alpha": ALPHA, "unit": "patient",
        "patients": int(patient.max()) + 1, "images": len(np.unique(first.sample)), "cases": len(first.label),
        "overlap_thresholds": list(overlaps), "metrics": metrics, "baseline_metrics": chance_names,
        "workers": workers,
        "baselines": baselines,
        "comparison": {
            "alpha": ALPHA, "level": float(level), "margin": float(margin),
            "fold_correction": {"ratio": plain(fold_ratio) if fold_ratio else None},
            "family": f"{len(names) * (len(names) - 1) // 2} pair(s) x {len(HEADLINE)} metrics ({', '.join(HEADLINE)})",
            "pairs": decide(pairs, variances, fold_ratio, level, margin) if pairs else [],
        },
        "notes": localization_notes(resamples, level, run_count, margin, overlaps),
    }


def localization_notes(resamples: int, level: float, runs: int, margin: float,
                       overlaps: Sequence[float]) -> list[str]:
    """What the numbers are computed on, against which noise, and what they leave out."""
    spread = ("Each worker's low/high also cover the run-to-run spread over its "
              f"{runs} runs: estimate ± t({runs - 1}) · se, se² = s²/runs (+ the fold correction) + the test set's "
              "shared variance, as for the AUROC verdicts; test_low/test_high show the test set's share alone."
              if runs > 1 else
              "With one run per worker the intervals show the test set's sampling noise only: they say nothing of "
              "how much another training seed would move the maps (run at least 3 seeds to measure it).")
    return [
        "A case is one (image, finding) pair with at least one true box; every figure is a mean over cases "
        "(AFP: false positives per image and finding), averaged over the worker's runs, which share the test set.",
        f"Intervals are {level:.0%}: percentile intervals of {resamples} bootstrap replicates that draw the test "
        "set's patients with replacement, all cases of a drawn patient together (test-set sampling by patient). "
        + spread,
        "Not covered: other datasets, hospitals or readers (the boxes are one annotation, taken as truth), the "
        "choice of the CAM method, upsampling, normalisation, threshold and component rule (fixed or chosen on "
        "the validation cases, whose own sampling noise is not in the interval), and other architectures or "
        "recipes.",
        "Chance baselines are exact expectations given the boxes, not samples: a uniformly random point hits "
        "with probability (union of the true boxes' area) / image area; the centred box (half the image's width "
        "and height) is scored like a detection. Their intervals are test-set sampling only.",
        "hit_rate_margin is the hit rate minus the random-point hit rate, paired case by case on the same "
        "replicates; excludes_zero says its interval lies wholly on one side of 0. Per-finding margins are not "
        "corrected for multiplicity, and findings with few cases give coarse rates.",
        f"Wang et al.'s accuracy counts a case correct when some detected box overlaps some true box by more than "
        f"T (strictly; T in {', '.join(f'{t:g}' for t in overlaps)}); IoBB divides by the detected box, so a "
        "small box inside the truth scores 1: read it with IoU and AFP. The pointing game does not depend on the "
        "threshold; mask IoU and Wang's scores do.",
        f"Pairs of workers are compared on hit rate and mean mask IoU with the AUROC verdict rules: *different* "
        "only when the mean paired difference over runs exceeds training noise and test-set sampling together "
        f"(alpha {ALPHA}, Holm over all pairs x both metrics), *equivalent* when the interval lies inside "
        f"±{margin:g} (in hit-rate or IoU units, a convention), else *undetermined*. One run per worker is always "
        "undetermined.",
    ]
