"""`harness register RUN_DIR` (and `benchmark --register`), and `harness models list|show|alias`."""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

from harness.model_registry.cards import RunModel, card_markdown
from harness.model_registry.inference import load_model
from harness.progress import announce

DEFAULT_ALIAS_HELP = ("also point ALIAS (e.g. champion) at each worker's run with the best validation macro AUROC "
                      "(chosen without the test set)")


def champions(models: list[RunModel]) -> set[str]:
    """Per worker, the run key with the highest validation macro AUROC (the first on ties or without one)."""
    best: dict[str, RunModel] = {}
    for model in models:
        score = model.validation_macro_auroc
        held = best.get(model.worker)
        if held is None or (not math.isnan(score) and (math.isnan(held.validation_macro_auroc)
                                                       or score > held.validation_macro_auroc)):
            best[model.worker] = model
    return {model.run_key for model in best.values()}


def native_exports(models: list[RunModel], cache: Path) -> dict[str, bytes]:
    """Each run's model in its framework's own format: its worker loads the kept weights and exports them."""
    from harness.runtime.local import LocalRuntime
    from harness.runtime.registry import resolve_workers

    runtime = LocalRuntime(cache)
    archives = {}
    with tempfile.TemporaryDirectory(prefix="cxrbench-export-log-") as logs:
        for model in models:
            spec = resolve_workers(model.worker)[0]
            with runtime.start(spec, Path(logs) / "worker.log") as worker:
                load_model(worker.client, model.card, model.weights)
                export, archives[model.run_key] = worker.client.export_native_archive()
            announce(f"{model.run_key}: {export['format']}, {export['size_bytes'] / 1e6:.1f} MB")
    return archives


def register_run(run_dir: Path, uri: str, alias: str | None = None, native: bool = True) -> list[tuple[str, int]]:
    """Register every kept model of `run_dir`; returns (registered name, version) for each, in study order."""
    from harness.config import cache_root
    from harness.model_registry.cards import run_models
    from harness.model_registry.store import register_models

    models = run_models(run_dir)
    archives = native_exports(models, cache_root()) if native else {}
    return register_models(models, archives, uri, alias, champions(models))


def add_registry_parsers(subparsers) -> None:
    """`register` and `models`, with their arguments."""
    register = subparsers.add_parser(
        "register", help="put a run directory's trained models into the MLflow model registry",
        description="Register every kept model of a benchmark run (one version per training run) with its model "
                    "card, the neutral safetensors and the framework's own export.")
    register.add_argument("run_dir", type=Path)
    register.add_argument("--registry", default=None, metavar="URI",
                          help="MLflow tracking URI (default: a SQLite store beside the run directory, "
                                                     "RESULTS/mlflow.db)")
    register.add_argument("--alias", default=None, metavar="ALIAS", help=DEFAULT_ALIAS_HELP)
    register.add_argument("--no-native", action="store_true",
                          help="skip the framework's own export (it starts each worker once)")
    models = subparsers.add_parser("models", help="the registered models: list, show a card, set an alias")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    for name, text in (("list", "every registered version, its aliases and test macro AUROC"),
                       ("show", "a version's model card"), ("alias", "point an alias at a version")):
        parser = models_sub.add_parser(name, help=text)
        if name != "list":
            parser.add_argument("model", metavar="NAME[@ALIAS|/VERSION]")
        if name == "alias":
            parser.add_argument("alias", metavar="ALIAS")
        parser.add_argument("--registry", default=None, metavar="URI",
                            help="MLflow tracking URI (default: results/mlflow.db)")


def run_register(args: argparse.Namespace) -> int:
    from harness.model_registry.store import registry_uri

    uri = registry_uri(args.registry, args.run_dir.resolve().parent)
    for name, version in register_run(args.run_dir, uri, args.alias, native=not args.no_native):
        print(f"registered {name} version {version}")
    print(f"registry: {uri}")
    return 0


def _summary(model) -> str:
    card = model.card
    macro = card["test"]["macro_auroc"]
    figure = "n/a" if macro["estimate"] is None else (
        f"{macro['estimate']:.4f} [{macro['low']:.4f}, {macro['high']:.4f}]")
    aliases = f" @{', @'.join(model.aliases)}" if model.aliases else ""
    versions = ", ".join(f"{package} {version}" for package, version in sorted(card["framework_versions"].items())
                         if package != "python")
    return (f"{model.name} v{model.version}{aliases}: {card['worker']} ({versions}), {card['architecture']} "
            f"{card['image_size']} px, test macro AUROC {figure}, run {card['run_id']} {card['run']}")


def run_models_command(args: argparse.Namespace) -> int:
    from harness.model_registry.store import list_models, registry_uri, resolve, set_alias

    uri = registry_uri(args.registry)
    if args.models_command == "list":
        found = list_models(uri)
        for model in found:
            print(_summary(model))
        print(f"{len(found)} registered version(s) in {uri}")
    elif args.models_command == "show":
        model = resolve(args.model, uri)
        print(card_markdown(model.name, model.version, model.card)
              + (f"\naliases: {', '.join(model.aliases)}" if model.aliases else ""))
    else:
        print(_summary(set_alias(args.model, args.alias, uri)))
    return 0
