"""The checks of BenchmarkConfig's options that are about this harness's values (harness.config):
each takes an option's parsed value and returns what is wrong with it, or None."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from cxrbench_worker.worker_labels import split_label, worker_label


def refusal(parse):
    """A check from a parser that raises ValueError: its message, without the flag it already names."""
    def check(value) -> str | None:
        try:
            parse(value)
        except ValueError as error:
            return str(error).partition(": ")[2] or str(error)
        return None
    return check


def not_negative(why: str = ""):
    return lambda value: None if value >= 0 else f"{value} must be >= 0{why}"


def init_check(value: str) -> str | None:
    if value == "random" or (value.startswith("imagenet=") and len(value) > len("imagenet=")):
        return None
    return f"{value!r} must be 'random' or 'imagenet=PATH' (a torchvision checkpoint file)"


def seeds_check(seeds: tuple[int, ...]) -> str | None:
    if all(seed >= 0 for seed in seeds) and len(set(seeds)) == len(seeds):
        return None
    return f"{','.join(map(str, seeds))} must be distinct integers >= 0"


def python_form(entries: tuple[str, ...]) -> str | None:
    names = [entry.partition("=")[0] for entry in entries]
    for entry in entries:
        name, equals, path = entry.partition("=")
        if not (equals and name and path):
            return f"{entry!r} must look like NAME=PATH, e.g. pytorch=/opt/conda/bin/python"
        if names.count(name) > 1:
            return f"worker '{name}' is given two interpreters"
        if not Path(path).expanduser().is_file() or not os.access(Path(path).expanduser(), os.X_OK):
            return f"{entry!r}: {path} is not an executable file"
    return None


def option_form(options: tuple[str, ...]) -> str | None:
    for entry in options:
        setting, equals, _ = entry.partition("=")
        if not (equals and "." in setting and setting.partition(".")[0] and setting.rpartition(".")[2]):
            return f"{entry!r} must look like WORKER.KEY=VALUE, e.g. tensorflow.jit_compile=true"
    return None


def cam_threshold_check(value: str) -> str | None:
    """`tuned`, or a number strictly between 0 and 1."""
    if value == "tuned":
        return None
    try:
        number = float(value)
    except ValueError:
        return f"{value!r} is neither `tuned` nor a number"
    return None if 0 < number < 1 else f"{value} must be `tuned` or within (0, 1)"


def option_targets(worker: str) -> list[str]:
    """The names an `--option` may address worker `worker` by, the least specific first: "keras" for
    keras; "keras", "keras[jax]" and "keras[jax]@3.14.0" for keras[jax]@3.14.0 ([] for "")."""
    if not worker:
        return []
    name, variant, _ = split_label(worker)
    return list(dict.fromkeys([name, worker_label(name, variant), worker]))


def addressed_options(worker: str, options: tuple[str, ...]) -> dict[str, str]:
    """The `WORKER.KEY=VALUE` switches addressed to `worker` ("keras", or "keras[jax]@3.14.0", which also
    takes those addressed to "keras" and "keras[jax]"), as KEY -> VALUE; the more specific wins."""
    chosen: dict[str, str] = {}
    for target in option_targets(worker):
        for entry in options:
            setting, _, value = entry.partition("=")
            if target and setting.startswith(f"{target}.") and "@" not in setting[len(target) + 1:]:
                chosen[setting[len(target) + 1:]] = value
    return chosen


def check_named_workers(labels: list[str], interpreters: Iterable[str], options: tuple[str, ...]) -> None:
    """ValueError when a --python or --option entry names a worker that is not among `labels` (a typo
    would go unseen)."""
    targets = {name for label in labels for name in option_targets(label)}
    for name in interpreters:
        if name not in labels:
            raise ValueError(f"--python: worker '{name}' is not in this run ({', '.join(labels)}); "
                             "name it as --workers does, e.g. keras@3.14.0 or keras[jax]")
    for entry in options:
        setting = entry.partition("=")[0]
        if not any(setting.startswith(f"{target}.") for target in targets):
            name = setting.split(".")[0] if "@" not in setting else setting
            raise ValueError(f"--option: {entry!r} is for worker '{name}', which is not in this run "
                             f"({', '.join(labels)})")


RAY_OPTIONS = {"ray_address": "--ray-address", "placement": "--placement", "cpus_per_run": "--cpus-per-run",
               "retries": "--retries", "allow_mixed_gpus": "--allow-mixed-gpus"}


def check_combinations(config, defaults: dict) -> None:
    """The rules that tie a BenchmarkConfig's options together (each option's own rule is on its
    declaration); ValueError naming the flag at fault. `defaults`: each field's default value."""

    def check(ok: bool, flag: str, message: str) -> None:
        if not ok:
            raise ValueError(f"{flag}: {message}")

    check(config.eval_batch_size >= 1, "eval_batch_size", f"{config.eval_batch_size} must be at least 1")
    check(config.runtime == "remote" or not config.remote_workers, "--worker", "addresses are for --runtime remote")
    check(config.runtime == "remote" or (config.tls_ca is None and config.token_file is None), "--runtime",
          "--tls-ca and --token-file are for --runtime remote")
    check(config.runtime != "remote" or bool(config.remote_workers), "--worker",
          "--runtime remote needs at least one --worker NAME=HOST:PORT")
    check(config.runtime in ("local", "ray") or not config.pythons, "--python",
          "existing interpreters are for --runtime local or ray (an image or a remote worker brings its own)")
    for name, flag in RAY_OPTIONS.items():
        check(config.runtime == "ray" or getattr(config, name) == defaults[name], flag, "is for --runtime ray")
    check(len(config.training_seeds) * config.folds <= 100, "--seeds",
          f"{len(config.training_seeds)} seeds x {config.folds} folds is more than 100 runs per worker")
