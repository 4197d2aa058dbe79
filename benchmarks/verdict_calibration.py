"""Calibration and power of the verdicts, by simulation: how often is noise called "different", and
how often is a true difference found?

Each simulated study compares two workers over J paired runs, the way `harness benchmark` does.
Per metric (the macro AUROC, and each of the 14 labels), run r's difference is

    d_r = delta + test_sd * Z + run_sd * e_r

where Z ~ N(0, 1) is the test set's sampling error shared by every run of the study (one test set),
e_r the training noise of run r (independent over runs, unit variance: normal; heavy-tailed,
Student's t with 3 degrees of freedom scaled down; or measured, drawn from the standardised test
AUROCs of 20 seeds of issue 14's default recipe (3 epochs; today's trains 2) on a GPU,
reference/gpu_training_noise.json, which are left-skewed: a run whose checkpoint falls early lands
far below the rest; its shape is assumed to hold for today's recipe), and delta the true
framework effect. The verdict receives the d_r and the shared test-set variance as the bootstrap estimates it
(test_sd^2 times chi-square(999) / 999 for 1,000 replicates), and decides exactly as the harness does
(harness.evaluation.comparison: paired_tests, Holm, verdicts).

run_sd and test_sd come from real multi-seed runs of this project: by default the figures in
reference/training_noise.json (measured on the default recipe), or `--from RUN_DIR` for a run of
yours with 3 or more seeds; each is pooled over the run's pairs of workers.

    .venv/bin/python -m benchmarks.verdict_calibration                    # the tables of docs/STATISTICS.md
    .venv/bin/python -m benchmarks.verdict_calibration --from results/<run> --studies 4000
    .venv/bin/python -m benchmarks.verdict_calibration --from results/<run> --save-reference   # renew the file
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.evaluation.comparison import ALPHA, DEFAULT_MARGIN, DIFFERENT, EQUIVALENT, paired_tests, verdicts
from harness.evaluation.multiplicity import holm

REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "training_noise.json"
MEASURED_SHAPE = Path(__file__).resolve().parents[1] / "reference" / "gpu_training_noise.json"
RUNS = (3, 5, 10)
POWER_RUNS = (3, 5, 10, 20, 30)  # beyond 10 too: what equivalence within the margin costs
PLANTED = (0.01, 0.02, 0.05)
NOISES = ("normal", "heavy-tailed", "measured")
BOOTSTRAP_REPLICATES = 1000


@dataclass(frozen=True)
class Noise:
    """Run-to-run sd of a pair's per-run difference and the shared test-set sd of its mean, for the
    macro AUROC and per label (arrays over labels)."""

    macro_run_sd: float
    macro_test_sd: float
    label_run_sd: np.ndarray
    label_test_sd: np.ndarray
    source: str


def _pooled(values: list[float | None]) -> float:
    """Root mean square of the finite values (variances pool, sds do not)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        raise ValueError("no finite value to pool")
    return math.sqrt(float(np.mean(np.square(finite))))


def noise_from_significance(significance: dict, source: str) -> Noise:
    """Pool every pair's run_sd and test_sd from a significance.json with 3 or more runs per worker."""
    comparison = significance.get("comparison") or {}
    macro = comparison.get("macro") or []
    if not macro or min(pair["runs"] for pair in macro) < 3:
        raise ValueError(f"{source}: needs two or more workers with 3 or more paired runs each")
    labels: dict[str, list[dict]] = {}
    for row in comparison["labels"]:
        labels.setdefault(row["label"], []).append(row)
    scorable = {label: rows for label, rows in labels.items() if any(row.get("run_sd") is not None for row in rows)}
    return Noise(
        macro_run_sd=_pooled([pair["run_sd"] for pair in macro]),
        macro_test_sd=_pooled([pair["test_sd"] for pair in macro]),
        label_run_sd=np.array([_pooled([row["run_sd"] for row in rows]) for rows in scorable.values()]),
        label_test_sd=np.array([_pooled([row["test_sd"] for row in rows]) for rows in scorable.values()]),
        source=source,
    )


def run_source(run_dir: Path) -> str:
    """Where a run's noise figures come from, in words: the run, its commit, its recipe and workers."""
    run = json.loads((run_dir / "run.json").read_text())
    config, git = run["config"], run["provenance"]["git"]
    phantom = run.get("data", {}).get("notes", {}).get("config") if config["dataset"] == "phantom" else None
    dataset = (f"phantom of {phantom['patients']} patients at conspicuity {phantom['conspicuity']:g}" if phantom
               else config["dataset"])
    return (f"run {run_dir.name} (commit {(git.get('commit') or 'unknown')[:12]}): {dataset}, "
            f"{config['architecture']}, {config['image_size']} px, {config['epochs']} epochs, Adam lr "
            f"{config['learning_rate']}, seeds {','.join(map(str, config['seeds']))}, folds {config['folds']}; "
            f"workers {', '.join(run['workers'])}")


def save_reference(noise: Noise, path: Path = REFERENCE) -> None:
    """Write the pooled figures as the default noise of the simulation."""
    path.write_text(json.dumps({
        "source": noise.source,
        "macro": {"run_sd": noise.macro_run_sd, "test_sd": noise.macro_test_sd},
        "labels": {"run_sd": noise.label_run_sd.tolist(), "test_sd": noise.label_test_sd.tolist()},
    }, indent=1) + "\n")


def reference_noise(path: Path = REFERENCE) -> Noise:
    """The figures measured on the project's default recipe (see the file's `source`)."""
    data = json.loads(path.read_text())
    return Noise(data["macro"]["run_sd"], data["macro"]["test_sd"], np.array(data["labels"]["run_sd"]),
                 np.array(data["labels"]["test_sd"]), data["source"])


def measured_shape(path: Path = MEASURED_SHAPE) -> np.ndarray:
    """The 20 deterministic seeds' test macro AUROCs, centred and scaled to unit variance."""
    values = np.asarray(json.loads(path.read_text())["test_macro_auroc"]["deterministic"], dtype=np.float64)
    return (values - values.mean()) / values.std(ddof=0)


def _training_noise(rng: np.random.Generator, shape: tuple[int, ...], kind: str) -> np.ndarray:
    """Unit-variance training noise: normal; Student's t with 3 df (variance 3) scaled down; or drawn
    from the measured seeds' standardised values (skewed, as real runs are)."""
    if kind == "normal":
        return rng.standard_normal(shape)
    if kind == "heavy-tailed":
        return rng.standard_t(3, shape) / math.sqrt(3.0)
    if kind == "measured":
        return rng.choice(measured_shape(), size=shape)
    raise ValueError(f"unknown noise {kind!r}")


def simulate(run_sd: np.ndarray, test_sd: np.ndarray, runs: int, delta: float, studies: int, kind: str,
             seed: int, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """Verdicts (studies, metrics) of simulated two-worker studies; metrics is the length of run_sd
    (1 for the macro AUROC, 14 for the labels, Holm over them within each study)."""
    rng = np.random.default_rng(seed)
    run_sd, test_sd = np.atleast_1d(run_sd), np.atleast_1d(test_sd)
    metrics = len(run_sd)
    shared = rng.standard_normal((studies, metrics, 1)) * test_sd[None, :, None]
    training = _training_noise(rng, (studies, metrics, runs), kind) * run_sd[None, :, None]
    differences = delta + shared + training
    estimated = test_sd[None, :] ** 2 * rng.chisquare(BOOTSTRAP_REPLICATES - 1, (studies, metrics)) / (
        BOOTSTRAP_REPLICATES - 1)
    tests = paired_tests(differences.reshape(studies * metrics, runs), estimated.reshape(-1), margin=margin)
    p = tests["p"].reshape(studies, metrics)
    p_equivalence = tests["p_equivalence"].reshape(studies, metrics)
    signed = np.sign(tests["difference"].reshape(studies, metrics))
    decided = verdicts(np.full((studies, metrics), runs), holm(p), holm(p_equivalence))
    # A "different" verdict with the wrong sign is a false positive too (it names the wrong winner).
    return np.where((decided == DIFFERENT) & (delta != 0) & (signed != np.sign(delta)), "wrong sign", decided)


def _mc_se(rate: float, studies: int) -> float:
    return math.sqrt(max(rate * (1 - rate), ALPHA * (1 - ALPHA)) / studies)


def false_positive_table(noise: Noise, studies: int, seed: int = 0) -> list[dict]:
    """A/A: no true difference; the share of 'different' for the macro AUROC, per label, and of
    studies with any label called different."""
    rows = []
    for kind in NOISES:
        for runs in RUNS:
            macro = simulate(np.array([noise.macro_run_sd]), np.array([noise.macro_test_sd]), runs, 0.0, studies,
                             kind, seed)
            labels = simulate(noise.label_run_sd, noise.label_test_sd, runs, 0.0, studies, kind, seed + 1)
            rows.append({"noise": kind, "runs": runs, "macro": float((macro == DIFFERENT).mean()),
                         "per_label": float((labels == DIFFERENT).mean()),
                         "any_label": float((labels == DIFFERENT).any(axis=1).mean()),
                         "macro_equivalent": float((macro == EQUIVALENT).mean())})
    return rows


def power_table(noise: Noise, studies: int, seed: int = 0, margin: float = DEFAULT_MARGIN) -> list[dict]:
    """Planted true macro AUROC differences: how often each is called different (right sign), and
    how often a true difference of 0 is called equivalent within the margin."""
    rows = []
    for runs in POWER_RUNS:
        row: dict = {"runs": runs}
        for delta in PLANTED:
            verdict = simulate(np.array([noise.macro_run_sd]), np.array([noise.macro_test_sd]), runs, delta, studies,
                               "normal", seed + int(delta * 1000), margin)
            row[delta] = float((verdict == DIFFERENT).mean())
        for width in (margin, 2 * margin):  # the default margin, and one twice as wide
            none = simulate(np.array([noise.macro_run_sd]), np.array([noise.macro_test_sd]), runs, 0.0, studies,
                            "normal", seed + 7, width)
            row[f"equivalent_at_0_within_{width:g}"] = float((none == EQUIVALENT).mean())
        rows.append(row)
    return rows


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def print_tables(noise: Noise, studies: int, margin: float) -> None:
    print(f"Noise from {noise.source}:")
    print(f"  macro AUROC: run-to-run sd of a pair's difference {noise.macro_run_sd:.4f}, shared test-set sd "
          f"{noise.macro_test_sd:.4f}; labels: run sd {noise.label_run_sd.min():.3f}-{noise.label_run_sd.max():.3f}, "
          f"test sd {noise.label_test_sd.min():.3f}-{noise.label_test_sd.max():.3f} ({len(noise.label_run_sd)} labels)")
    print(f"\nA/A: two workers from the same distribution, {studies} studies per row (Monte-Carlo se about "
          f"{_percent(_mc_se(ALPHA, studies))} at 5%). False-positive rate of 'different' at alpha {ALPHA}:\n")
    print("| training noise | runs per worker | macro AUROC | per label | any of the labels | macro 'equivalent' |")
    print("|---|---|---|---|---|---|")
    for row in false_positive_table(noise, studies):
        print(f"| {row['noise']} | {row['runs']} | {_percent(row['macro'])} | {_percent(row['per_label'])} | "
              f"{_percent(row['any_label'])} | {_percent(row['macro_equivalent'])} |")
    print(f"\nPower: a planted true macro AUROC difference, called 'different' with the right sign; and a true "
          f"difference of 0 called 'equivalent' at the margin and at twice it ({studies} studies per cell, normal "
          "noise):\n")
    print_power(noise, studies, margin)


def print_power(noise: Noise, studies: int, margin: float) -> None:
    widths = (margin, 2 * margin)
    print("| runs per worker | " + " | ".join(f"true difference {delta}: different" for delta in PLANTED) + " | "
          + " | ".join(f"true difference 0: equivalent within ±{width:g}" for width in widths) + " |")
    print("|---|" + "---|" * (len(PLANTED) + len(widths)))
    for row in power_table(noise, studies, margin=margin):
        print(f"| {row['runs']} | " + " | ".join(_percent(row[delta]) for delta in PLANTED) + " | "
              + " | ".join(_percent(row[f"equivalent_at_0_within_{width:g}"]) for width in widths) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="run_dir", type=Path, help="a run directory with 3 or more seeds per worker")
    parser.add_argument("--studies", type=int, default=4000, help="simulated studies per row (default 4000)")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN, help="equivalence margin (default 0.01)")
    parser.add_argument("--save-reference", action="store_true", help=f"with --from: write {REFERENCE.name}")
    args = parser.parse_args(argv)
    if args.run_dir:
        noise = noise_from_significance(json.loads((args.run_dir / "significance.json").read_text()),
                                        run_source(args.run_dir))
        if args.save_reference:
            save_reference(noise)
            print(f"wrote {REFERENCE}")
    else:
        noise = reference_noise()
    print_tables(noise, args.studies, args.margin)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
