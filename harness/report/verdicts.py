"""Plain-English verdicts from significance.json: which differences between workers are real.

Shared by the report and the command line's closing summary, so both say the same thing. Every
sentence says what was compared, against which noise, and what it does not show; only a pair
whose verdict is "different" is ever said to differ, and none is ever called "the same".
"""

from __future__ import annotations

from harness.evaluation.comparison import DIFFERENT, EQUIVALENT


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def _plain(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _p(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _interval(low: float | None, high: float | None, level: float) -> str:
    return f"{level:.0%} CI {_signed(low)} to {_signed(high)}"


def _direction(pair: dict) -> str:
    """"b lower by 0.012" / "b higher by 0.012": how b compares with a, in words."""
    difference = pair["difference"]
    return f"{pair['b']} {'lower' if difference > 0 else 'higher'} by {abs(difference):.3f}"


def _noise(pair: dict) -> str:
    return (f"run-to-run sd of the difference {_plain(pair.get('run_sd'))}, shared test-set sd "
            f"{_plain(pair.get('test_sd'))}")


def pair_verdict(pair: dict, level: float, margin: float, metric: str = "macro AUROC") -> str:
    """One sentence on one pair of workers: the means, the difference, its interval, the verdict."""
    head = (f"{pair['a']} vs {pair['b']}, {metric} over {pair['runs']} paired run{'s' if pair['runs'] != 1 else ''}: "
            f"{_plain(pair.get('mean_a'))} vs {_plain(pair.get('mean_b'))}")
    if pair.get("difference") is None:
        return f"{head}: cannot be compared (a label with one class in the test set)."
    if pair["runs"] < 2:
        return (f"{head}, difference {_signed(pair['difference'])}: **undetermined**. One run per worker cannot "
                "separate the framework from training noise: the interval "
                f"{_signed(pair.get('test_low'))} to {_signed(pair.get('test_high'))} covers only the test set's "
                "sampling noise, and another training seed can move one framework's "
                f"{metric.removeprefix('macro ')} by more than that. "
                "Run at least 3 seeds (--seeds 0,1,2); the spread they show says how many more are needed.")
    interval = _interval(pair.get("low"), pair.get("high"), level)
    if pair["verdict"] == DIFFERENT:
        return (f"{head}: **different**: {_direction(pair)} ({interval}), more than training and test-set noise "
                f"together produce (Holm-adjusted p {_p(pair.get('p_holm'))}; {_noise(pair)}).")
    if pair["verdict"] == EQUIVALENT:
        detectable = (" The difference itself exceeds the noise (Holm-adjusted p "
                      f"{_p(pair.get('p_holm'))}) but is smaller than the margin."
                      if pair.get("p_holm") is not None and pair["p_holm"] < 0.05 else "")
        return (f"{head}: **equivalent within ±{margin:g}**: difference {_signed(pair['difference'])} ({interval}, "
                f"inside the margin; {_noise(pair)}).{detectable}")
    needed = pair.get("runs_needed_note") or ""
    if pair.get("p") is not None and pair["p"] < 0.05:  # beyond noise for this pair alone, not after Holm
        within = (f"({interval} for this pair alone) is not beyond training and test-set noise once every comparison "
                  f"is corrected for (Holm-adjusted p {_p(pair.get('p_holm'))}; {_noise(pair)})")
    else:
        within = f"({interval}) is within training and test-set noise ({_noise(pair)})"
    return (f"{head}: **undetermined**: difference {_signed(pair['difference'])} {within}, nor does its interval "
            f"lie inside ±{margin:g} (equivalence); this does not show the two are the same"
            + (f". To settle it: {needed}." if needed else "."))


def label_summary(a: str, b: str, rows: list[dict], level: float, margin: float) -> str:
    """One sentence per pair of workers on its per-label verdicts: how many of each, and which differ."""
    scored = [row for row in rows if row.get("difference") is not None]
    head = f"{a} vs {b}, per label ({len(scored)} labels, Holm over every pair x label)"
    if scored and max(row["runs"] for row in scored) < 2:
        return (f"{head}: all **undetermined**: one run per worker cannot separate the framework from training "
                "noise for any label.")
    different = [row for row in scored if row["verdict"] == DIFFERENT]
    equivalent = sum(row["verdict"] == EQUIVALENT for row in scored)
    undetermined = len(scored) - len(different) - equivalent
    listed = "; ".join(f"{row['label']}: {_direction(row)} ({_interval(row.get('low'), row.get('high'), level)})"
                       for row in different)
    return (f"{head}: " + (f"{len(different)} **different** ({listed})" if listed else "none different")
            + f", {equivalent} equivalent within ±{margin:g}, {undetermined} undetermined.")


def comparison_lines(significance: dict) -> list[str]:
    """Every pair's macro AUROC verdict, then each pair's per-label summary."""
    comparison = significance.get("comparison")
    if not comparison:
        return ["These results predate the verdicts against training noise: `harness report RUN_DIR` recomputes them."]
    level, margin = comparison["level"], comparison["margin"]
    lines = [pair_verdict(pair, level, margin) for pair in comparison["macro"]]
    pairs: dict[tuple[str, str], list[dict]] = {}
    for row in comparison["labels"]:
        pairs.setdefault((row["a"], row["b"]), []).append(row)
    return lines + [label_summary(a, b, rows, level, margin) for (a, b), rows in pairs.items()]


def verdicts(significance: dict) -> list[str]:
    """The lines the command line prints at the end of a run: the same as the report's."""
    return comparison_lines(significance)
