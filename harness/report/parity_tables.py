"""The parity summary (harness.training.parity.compare) as Markdown tables, for `harness parity` and the report."""

from __future__ import annotations


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2e}"


def _limit(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"


def parity_lines(summary: dict) -> list[str]:
    """The summary as Markdown tables (printed by `harness parity`, embedded in the report)."""
    tol, steps = summary["tolerances"], summary["steps"]
    precision = summary.get("precision", "fp32")  # summaries saved before mixed precision had none
    mixed = precision != "fp32"
    lines = [f"Parity: {'PASSED' if summary['passed'] else 'FAILED'} "
             f"({precision}; same starting weights, same batches, {steps} training steps)", ""]
    expected = summary["expected_counts"]
    noise_run = "its fp32 run" if mixed else "its nudged run"
    lines += [f"| worker | trainable | non-trainable | equals the reference | own noise over {steps} steps "
              f"({noise_run}) |", "|---|---:|---:|---|---:|"]
    for count in summary["counts"]:
        verdict = "yes" if count["ok"] else f"NO (expected {expected['trainable']:,} / {expected['non_trainable']:,})"
        noise = _number(summary["own_noise_max"].get(count["worker"]))
        lines.append(f"| {count['worker']} | {count['trainable']:,} | {count['non_trainable']:,} | {verdict} "
                     f"| {noise} |")
    if summary.get("own_deviations"):
        lines += ["", f"Each worker in {precision} against its own fp32 run from the same weights (its rounding):",
                  "", f"| worker | eval logits rel (<= {_limit(tol['own_logits_relative'])}) | "
                  f"first loss rel (<= {_limit(tol['own_first_loss_relative'])}) | "
                  f"feature maps rel (<= {_limit(tol.get('own_features_relative'))}) | ok |",
                  "|---|---:|---:|---:|---|"]
        lines += [f"| {row['worker']} | {row['logits_relative']:.2e} | {row['first_loss_relative']:.2e} | "
                  f"{_number(row.get('features_relative'))} | {'yes' if row['ok'] else 'NO'} |"
                  for row in summary["own_deviations"]]
    if not summary["pairs"]:
        return lines + ["", "Only one worker: no pair to compare."]
    lines += ["", "| pair | eval logits max abs | eval logits rel | allowed | first loss rel | allowed | "
              f"{steps}-step losses rel, max | allowed, max | logits after training rel | ok |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for pair in summary["pairs"]:
        logits_allowed = pair.get("logits_allowed", tol["logits_relative"])
        first_allowed = pair.get("first_loss_allowed", tol["first_loss_relative"])
        lines.append(f"| {' vs '.join(pair['workers'])} | {pair['logits_max_abs']:.3g} | "
                     f"{pair['logits_relative']:.2e} | {logits_allowed:.2e} | "
                     f"{pair['first_loss_relative']:.2e} | {first_allowed:.2e} | {pair['losses_relative_max']:.2e} | "
                     f"{pair['losses_allowed_max']:.2e} | {pair['trained_logits_relative']:.2e} | "
                     f"{'yes' if pair['ok'] else 'NO'} |")
    factor = summary["noise_factor"]
    if mixed and summary.get("reference_tolerances") and any("reference_ok" in pair for pair in summary["pairs"]):
        fp32 = summary["reference_tolerances"]
        lines += ["", "The same pairs' fp32 reference runs, under fp32's limits:", "",
                  f"| pair | eval logits rel (<= {fp32['logits_relative']:g}) | "
                  f"first loss rel (<= {fp32['first_loss_relative']:g}) | ok |", "|---|---:|---:|---|"]
        lines += [f"| {' vs '.join(pair['workers'])} | {pair['reference_logits_relative']:.2e} | "
                  f"{pair['reference_first_loss_relative']:.2e} | {'yes' if pair['reference_ok'] else 'NO'} |"
                  for pair in summary["pairs"] if "reference_ok" in pair]
    if mixed:
        lines += ["", f"In {precision} two workers may differ by {factor:g} x the larger own deviation from fp32 "
                  f"(logits, first loss, each step's loss so far), never less than {tol['logits_relative']:g} "
                  f"(logits), {tol['first_loss_relative']:g} (first loss), {tol['losses_relative']:g} (losses); the "
                  "floors and ceilings come from the compute dtype's unit roundoff (harness/training/parity.py)."]
    else:
        lines += ["", f"Losses may drift apart by max({tol['losses_relative']:g}, {factor:g} x the larger "
                  "own rounding noise so far) at each step: own noise is how far a worker's run drifts from the same "
                  "run started one unit in the last place away (fp32 training from a random start is chaotic)."]
    lines += feature_map_lines(summary)
    if summary["cross_loads"]:
        lines += ["", "| weights exported by | loaded into | logits rel | allowed | ok |", "|---|---|---:|---:|---|"]
        lines += [f"| {row['exporter']} | {row['importer']} | {row['logits_relative']:.2e} | "
                  f"{row.get('allowed', tol['loaded_logits_relative']):.2e} | {'yes' if row['ok'] else 'NO'} |"
                  for row in summary["cross_loads"]]
    return lines


def feature_map_lines(summary: dict) -> list[str]:
    """The pairs' final feature maps and CAMs (harness.training.feature_parity); none in summaries saved
    before the FeatureMaps RPC."""
    rows = summary.get("feature_maps") or []
    if not rows:
        return []
    reference = any("reference_features_relative" in row for row in rows)
    fp32 = (summary.get("reference_tolerances") or {}).get("features_relative", 1e-4)
    lines = ["", "Final feature maps (eval mode, starting weights, the eval batch) and the class activation maps "
             "the harness computes from them with the starting head:", "",
             "| pair | feature maps max abs | feature maps rel | CAMs max abs | CAMs rel | allowed |"
             + (f" fp32 runs' maps rel (<= {fp32:g}) |" if reference else "") + " ok |",
             "|---|---:|---:|---:|---:|---:|" + ("---:|" if reference else "") + "---|"]
    for row in rows:
        fp32_column = f" {_number(row.get('reference_features_relative'))} |" if reference else ""
        lines.append(f"| {' vs '.join(row['workers'])} | {row['features_max_abs']:.3g} | "
                     f"{row['features_relative']:.2e} | {row['cams_max_abs']:.3g} | {row['cams_relative']:.2e} | "
                     f"{row['allowed']:.2e} |{fp32_column} {'yes' if row['ok'] else 'NO'} |")
    return lines
