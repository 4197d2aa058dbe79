"""The report's lines on the conditions the workers ran under: the preflight's findings and the timing mode."""

from __future__ import annotations


def unequal_banner(preflight: dict | None) -> list[str]:
    """A warning at the top of the report when the run went ahead under unequal conditions (--allow-unequal)."""
    if not preflight or not preflight.get("unequal"):
        return []
    workers = "; ".join(f"{name}: {entry['device']}, {entry['threads']} threads, {entry['precision']}"
                        for name, entry in preflight.get("workers", {}).items())
    return [
        "> **Warning: the workers ran under unequal conditions** (`--allow-unequal`): "
        + "; ".join(preflight["unequal"]) + f". As reported: {workers}. Every difference below mixes the framework "
        "with these differences of hardware or settings; none of it can be credited to the framework alone.",
        "",
    ]


def conditions_lines(preflight: dict | None, config: dict) -> list[str]:
    """Under the efficiency table: the device every worker ran on, and the timing mode."""
    lines = []
    if preflight:
        if preflight.get("unequal"):
            lines.append(f"Device asked: {preflight['device']} ({preflight['device_reason']}); the workers' conditions "
                         "were NOT equal (see the warning at the top).")
        else:
            lines.append(f"Every worker ran on {preflight['device']} ({preflight['device_reason']}), with the same "
                         "device model, threads and precision, as each reported before training.")
    deterministic = config.get("deterministic")
    if deterministic is not None:
        lines.append("Timed runs used the frameworks' deterministic algorithms (`--deterministic`): slower, and "
                     "PyTorch's cuDNN autotuning off." if deterministic else
                     "Timed runs used the frameworks' default, non-deterministic algorithms (cuDNN autotuning on "
                     "where the framework has it), as users train; the parity probes were deterministic.")
    return lines + ([""] if lines else [])
