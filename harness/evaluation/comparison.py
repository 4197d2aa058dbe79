"""Is a difference between two workers a framework effect, training noise, or test-set noise?

The unit of replication is the training run. Run r of every worker had the same training seed and
fold (the same starting weights, batches and augmentation), so the runs pair across workers, and a
pair of workers yields one difference per run, d_r = metric_a(r) - metric_b(r), all scored on the
same test set. Two noises move the mean difference:

* training noise: another seed gives another model; it shows as the spread of d_r over runs;
* test-set sampling noise: another test set would give other AUROCs; a patient bootstrap of the
  test set, shared by every run, measures it. The part of it that differs between runs already
  shows in the spread of d_r; the part all runs share (one test set) does not average away with
  more runs.

The standard error of the mean difference adds the two:

    se^2 = c * s_d^2 + v_test,   c = 1/J  (+ n_validation / n_train with K > 1 folds)

where s_d^2 is the sample variance of the J paired differences and v_test the shared part of the
test set's variance (below). With folds, training sets overlap, the runs are positively correlated, and 1/J
understates the variance; the corrected resampled t-test (Nadeau & Bengio 2003; Bouckaert & Frank
2004, for r repetitions of K-fold: 1/(K r) + n_test/n_train) adds the ratio of held-out to
training images. v_test is the test set's share that every run has in common: the mean covariance
between runs of the bootstrap replicates of their differences (the part that differs between runs
already shows in s_d^2). The interval is mean +- t(J - 1) se: the degrees of freedom of s_d^2, which
is exact when v_test is 0 and conservative otherwise (see _se_df for why not Welch-Satterthwaite).

Three verdicts, each at alpha = 0.05 with Holm's correction over the family (pairs of workers for
the macro AUROC; pairs x labels per label):

* different: the two-sided t-test of "mean difference = 0" rejects;
* equivalent within +-margin: two one-sided tests (Schuirmann 1987) reject both "difference <=
  -margin" and "difference >= margin" at alpha / 2 each, i.e. the printed 95% interval lies inside
  the margin (p_equivalence is twice the larger one-sided p, so it too is compared with alpha);
* undetermined: neither, with a rough number of runs that would settle it.

One run per worker leaves s_d^2 unknown: the verdict is always undetermined, whatever the test-set
interval says, because one run cannot separate the framework from training noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import SupportsFloat

import numpy as np
from scipy.stats import t as student_t

from harness.evaluation.multiplicity import holm

ALPHA = 0.05
DEFAULT_MARGIN = 0.01
MAX_RUNS_PLANNED = 200  # the search for "runs needed" stops here
DIFFERENT, EQUIVALENT, UNDETERMINED = "different", "equivalent", "undetermined"


def plain(value: SupportsFloat) -> float | None:
    """A JSON-ready float: None for NaN or infinity (a float, numpy scalar or 0-d array)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _critical(df: np.ndarray | float, level: float) -> np.ndarray:
    """Two-sided critical value of Student's t (the normal one for infinite df)."""
    return student_t.ppf((1.0 + level) / 2.0, df)


def _se_df(run_variance: np.ndarray | float, runs: np.ndarray | float, test_variance: np.ndarray | float,
           fold_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Standard error of the mean difference and its degrees of freedom: runs - 1, those of the
    run-to-run variance, whatever share of se^2 the test set's (known) variance takes.

    With t on runs - 1 df the test is exact when the test set adds nothing and conservative when it
    does. Welch-Satterthwaite's df would grow as the test set's share grows, but with a handful of
    runs it is anti-conservative: when the runs' spread comes out small by chance the df climbs
    exactly when the variance is underestimated (8% false positives at 3 runs, and 23% for any of 14
    labels, in benchmarks/verdict_calibration.py), so it is not used.
    """
    with np.errstate(divide="ignore", invalid="ignore"):  # no runs, or one: NaN, and the caller says why
        runs = np.asarray(runs, dtype=np.float64)
        training = (1.0 / runs + fold_ratio) * run_variance
        se = np.sqrt(training + test_variance)
        df = np.where(training == 0.0, np.inf, runs - 1.0)
    return se, df


def paired_tests(differences: np.ndarray, test_variance: np.ndarray, fold_ratio: float = 0.0, level: float = 0.95,
                 margin: float = DEFAULT_MARGIN) -> dict[str, np.ndarray]:
    """The paired comparison of many (pair, metric) rows at once, before multiplicity.

    `differences`: (S, J) a - b for each of J paired runs (NaN where a run could not be scored: left
    out). `test_variance`: (S,) the test set's shared variance of the mean difference. `fold_ratio`:
    n_validation / n_train of a fold with K > 1 folds (0 without folds). Returns arrays (S,): runs,
    difference (the mean), run_sd, test_sd, se, df, low, high (the interval at `level`), p (two-sided,
    difference = 0) and p_equivalence (TOST at +-margin, doubled); NaN where one run cannot tell.
    """
    if not 0.0 < level < 1.0 or not margin > 0.0 or not fold_ratio >= 0.0:
        raise ValueError(f"level {level} must be in (0, 1), margin {margin} > 0, fold_ratio {fold_ratio} >= 0")
    d = np.atleast_2d(np.asarray(differences, dtype=np.float64))
    test_variance = np.asarray(test_variance, dtype=np.float64).reshape(-1)
    finite = np.isfinite(d)
    runs = finite.sum(axis=1)
    filled = np.where(finite, d, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(runs > 0, filled.sum(axis=1) / runs, np.nan)
        run_variance = np.where(runs > 1, (np.where(finite, d - mean[:, None], 0.0) ** 2).sum(axis=1) / (runs - 1),
                                np.nan)
    testable = (runs > 1) & np.isfinite(test_variance)
    se, df = _se_df(run_variance, runs, test_variance, fold_ratio)
    se, df = np.where(testable, se, np.nan), np.where(testable, df, np.nan)
    half = _critical(np.where(testable, df, 1.0), level) * se
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.minimum(1.0, 2.0 * student_t.sf(np.abs(mean) / se, df))
        p_equivalence = np.minimum(1.0, 2.0 * np.maximum(student_t.sf((mean + margin) / se, df),
                                                         student_t.sf((margin - mean) / se, df)))
    # Every run gave the same difference and the test set cannot move it (bit-identical workers): no noise at all.
    exact = testable & (se == 0.0)
    p = np.where(exact, np.where(mean == 0.0, 1.0, 0.0), p)
    p_equivalence = np.where(exact, np.where(np.abs(mean) < margin, 0.0, 1.0), p_equivalence)
    half = np.where(exact, 0.0, half)
    return {"runs": runs, "difference": mean, "run_sd": np.sqrt(run_variance),
            "test_sd": np.sqrt(np.where(test_variance >= 0, test_variance, np.nan)), "se": se, "df": df,
            "low": mean - half, "high": mean + half, "p": np.where(testable, p, np.nan),
            "p_equivalence": np.where(testable, p_equivalence, np.nan)}


def pair_statistics(differences: Sequence[float], test_variance: float, fold_ratio: float = 0.0,
                    level: float = 0.95, margin: float = DEFAULT_MARGIN) -> dict:
    """paired_tests for one pair and metric, as plain Python numbers (NaN where one run cannot tell)."""
    rows = paired_tests(np.asarray(differences, dtype=np.float64).reshape(1, -1), np.asarray([test_variance]),
                        fold_ratio, level, margin)
    return {key: (int(value[0]) if key == "runs" else float(value[0])) for key, value in rows.items()}


def verdicts(runs: np.ndarray, p_holm: np.ndarray, p_equivalence_holm: np.ndarray,
             alpha: float = ALPHA) -> np.ndarray:
    """Each row's verdict from its Holm-adjusted p-values: equivalent, different or undetermined.

    Equivalent comes first: a difference may be detectable yet smaller than the margin (the sentence
    says so). One run per worker is always undetermined.
    """
    measured = np.asarray(runs) >= 2
    with np.errstate(invalid="ignore"):
        equivalent = measured & (np.asarray(p_equivalence_holm) < alpha)
        different = measured & (np.asarray(p_holm) < alpha)
    return np.where(equivalent, EQUIVALENT, np.where(different, DIFFERENT, UNDETERMINED))


def runs_needed(pair: dict, test_variance: float, fold_ratio: float, level: float, margin: float,
                family: int = 1) -> tuple[int | None, str]:
    """Roughly how many paired runs would settle an undetermined pair, taking its current mean
    difference and run-to-run spread as the truth (a planning figure, not a promise); `family`
    tests share the error rate (Bonferroni, a little stricter than Holm)."""
    runs, mean = pair["runs"], pair["difference"]
    if runs < 2:
        return 3, ("one run per worker cannot measure training noise; run at least 3 (--seeds 0,1,2), then the spread "
                   "they show says how many more are needed (docs/STATISTICS.md)")
    run_variance = pair["run_sd"] ** 2
    level = 1.0 - (1.0 - level) / max(family, 1)
    totals = np.arange(runs + 1, MAX_RUNS_PLANNED + 1)
    se, df = _se_df(run_variance, totals, test_variance, fold_ratio)
    half = _critical(df, level) * se
    decisive = (abs(mean) > half) | (abs(mean) + half < margin)
    if decisive.any():
        first = int(np.argmax(decisive))
        total = int(totals[first])
        if abs(mean) > half[first]:
            return total, f"about {total} runs per worker, if the difference stays near {mean:+.3f}, to call it real"
        return total, f"about {total} runs per worker to show it lies within ±{margin:g}"
    floor = math.sqrt(test_variance + fold_ratio * run_variance)
    return None, ("more runs alone will not settle it: the test set's sampling noise"
                  + (" and the folds' shared training data keep" if fold_ratio else " keeps")
                  + f" the standard error above {floor:.3f}; a larger test set would")


def decide(pairs: list[dict], test_variances: Sequence[float], fold_ratio: float, level: float = 0.95,
           margin: float = DEFAULT_MARGIN, alpha: float = ALPHA) -> list[dict]:
    """Holm over the family, then each pair's verdict and, if undetermined, the runs it would need.

    `pairs` are pair_statistics results with any extra keys (one family: e.g. every pair of workers on
    the macro AUROC); returns them JSON-ready with p_holm, p_equivalence_holm, verdict, runs_needed
    and runs_needed_note.
    """
    p_holm = holm([pair["p"] for pair in pairs])
    p_equivalence_holm = holm([pair["p_equivalence"] for pair in pairs])
    decided_verdicts = verdicts(np.asarray([pair["runs"] for pair in pairs]), p_holm, p_equivalence_holm, alpha)
    family = int(np.isfinite(p_holm).sum())
    decided = []
    for pair, different, equivalent, verdict, test_variance in zip(pairs, p_holm, p_equivalence_holm,
                                                                   decided_verdicts, test_variances, strict=True):
        needed, note = (None, "")
        if verdict == UNDETERMINED and math.isfinite(pair["difference"]):
            needed, note = runs_needed(pair, test_variance, fold_ratio, level, margin, family)
        decided.append({**{key: (plain(value) if isinstance(value, float) else value) for key, value in pair.items()},
                        "p_holm": plain(different), "p_equivalence_holm": plain(equivalent), "verdict": str(verdict),
                        "runs_needed": needed, "runs_needed_note": note})
    return decided
