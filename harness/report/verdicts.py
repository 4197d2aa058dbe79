"""Plain-English verdicts from significance.json: which differences between workers are real.

Shared by the report and the command line's closing summary, so both say the same thing.
"""

from __future__ import annotations


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def _plain(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _p(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def macro_verdict(pair: dict, level: float) -> str:
    """One sentence on one pair's macro AUROC difference."""
    head = (f"{pair['a']} vs {pair['b']}: macro AUROC {_plain(pair['estimate_a'])} vs {_plain(pair['estimate_b'])}, "
            f"difference {_signed(pair['difference'])}")
    if pair.get("low") is not None and pair.get("high") is not None:
        head += f" ({level:.0%} CI {_signed(pair['low'])} to {_signed(pair['high'])})"
    if pair["significant"]:
        better = pair["a"] if pair["difference"] > 0 else pair["b"]
        return f"{head}: **significant** (Holm-adjusted p {_p(pair['p_holm'])}); {better} is better."
    return (f"{head}: not significant (Holm-adjusted p {_p(pair['p_holm'])}); "
            "the difference is within the test set's noise.")


def label_verdict(a: str, b: str, rows: list[dict]) -> str:
    """One sentence on how many per-label differences of one pair are significant, and which."""
    scored = [row for row in rows if row.get("p_holm") is not None]
    significant = [row for row in scored if row["significant"]]
    if not significant:
        return f"{a} vs {b}, per label: none of the {len(scored)} label differences is significant."
    better = lambda row: a if row["difference"] > 0 else b  # noqa: E731
    listed = ", ".join(f"{row['label']} ({better(row)} better, {_signed(row['difference'])})" for row in significant)
    return (f"{a} vs {b}, per label: {len(significant)} of {len(scored)} label differences are "
            f"**significant**: {listed}.")


def run_verdict(pair: dict) -> str:
    """One sentence on whether a pair's macro AUROC difference exceeds run-to-run (training) noise."""
    head = (f"{pair['a']} vs {pair['b']} over {pair['runs']} paired runs (same seed and fold): mean difference "
            f"{_signed(pair['difference'])}, sd {_plain(pair['sd'])}")
    if pair.get("p_holm") is None:
        return f"{head}: too few runs to test against training noise (3 or more needed)."
    if pair["significant"]:
        return f"{head}: **larger than run-to-run noise** (paired t-test, Holm-adjusted p {_p(pair['p_holm'])})."
    return f"{head}: within run-to-run noise (paired t-test, Holm-adjusted p {_p(pair['p_holm'])})."


def verdicts(significance: dict) -> list[str]:
    """Every pair's macro verdict, then per-label verdicts, then the verdicts against training noise.

    With one run per worker the tests see only the test set's sampling noise, and the last line says so.
    """
    level = significance.get("level", 0.95)
    lines = [macro_verdict(pair, level) for pair in significance.get("macro_auroc_pairs", [])]
    pairs: dict[tuple[str, str], list[dict]] = {}
    for row in significance.get("label_pairs", []):
        pairs.setdefault((row["a"], row["b"]), []).append(row)
    lines += [label_verdict(a, b, rows) for (a, b), rows in pairs.items()]
    run_pairs = significance.get("run_pairs", [])
    if run_pairs and min(pair["runs"] for pair in run_pairs) > 1:
        lines += [run_verdict(pair) for pair in run_pairs]
    elif lines:
        lines.append("Caution: one run per worker, so these tests cover the test set's sampling noise only, not "
                     "training noise (another seed can move a worker's AUROC by several hundredths); "
                     "use --seeds (and --folds) to measure it.")
    return lines
