"""The parity summary (harness.training.parity.compare) as Markdown tables, for `harness parity` and the report."""

from __future__ import annotations


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2e}"


def parity_lines(summary: dict) -> list[str]:
    """The summary as Markdown tables (printed by `harness parity`, embedded in the report)."""
    tol, steps = summary["tolerances"], summary["steps"]
    lines = [f"Parity: {'PASSED' if summary['passed'] else 'FAILED'} "
             f"(same starting weights, same batches, {steps} training steps)", ""]
    expected = summary["expected_counts"]
    lines += [f"| worker | trainable | non-trainable | equals the reference | own rounding noise over {steps} steps |",
              "|---|---:|---:|---|---:|"]
    for count in summary["counts"]:
        verdict = "yes" if count["ok"] else f"NO (expected {expected['trainable']:,} / {expected['non_trainable']:,})"
        noise = _number(summary["own_noise_max"].get(count["worker"]))
        lines.append(f"| {count['worker']} | {count['trainable']:,} | {count['non_trainable']:,} | {verdict} "
                     f"| {noise} |")
    if not summary["pairs"]:
        return lines + ["", "Only one worker: no pair to compare."]
    lines += ["", f"| pair | eval logits max abs | eval logits rel (<= {tol['logits_relative']:g}) | "
              f"first loss rel (<= {tol['first_loss_relative']:g}) | {steps}-step losses rel, max | allowed, max | "
              "logits after training rel | ok |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for pair in summary["pairs"]:
        lines.append(f"| {' vs '.join(pair['workers'])} | {pair['logits_max_abs']:.3g} | "
                     f"{pair['logits_relative']:.2e} | "
                     f"{pair['first_loss_relative']:.2e} | {pair['losses_relative_max']:.2e} | "
                     f"{pair['losses_allowed_max']:.2e} | {pair['trained_logits_relative']:.2e} | "
                     f"{'yes' if pair['ok'] else 'NO'} |")
    lines += ["", f"Losses may drift apart by max({tol['losses_relative']:g}, {summary['noise_factor']:g} x the larger "
              "own rounding noise so far) at each step: own noise is how far a worker's run drifts from the same run "
              "started one unit in the last place away (fp32 training from a random start is chaotic)."]
    if summary["cross_loads"]:
        lines += ["", f"| weights exported by | loaded into | logits rel (<= {tol['loaded_logits_relative']:g}) | ok |",
                  "|---|---|---:|---|"]
        lines += [f"| {row['exporter']} | {row['importer']} | {row['logits_relative']:.2e} | "
                  f"{'yes' if row['ok'] else 'NO'} |"
                  for row in summary["cross_loads"]]
    return lines
