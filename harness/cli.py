"""The `harness` command line: benchmark, parity, data prepare, report, register, models, predict, app,
workers list and lock."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from harness.config import BenchmarkConfig, ParityOptions, cache_root
from harness.options import add_options, from_arguments


def _benchmark_parser(subparsers) -> None:
    parser = subparsers.add_parser("benchmark", help="train and evaluate workers on the same data",
                                   description="Train every selected worker on identical batches and report.")
    add_options(parser, BenchmarkConfig, "benchmark")


def _parity_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "parity", help="prove the workers compute the same network (exit 1 when a tolerance is exceeded)",
        description="Load the same weights into every worker, feed the same batches, compare logits, losses, "
                    "parameter counts and cross-loaded weights.")
    add_options(parser, BenchmarkConfig, "parity")
    add_options(parser, ParityOptions, "parity")


def _print_summary(run_dir: Path) -> None:
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.exists():
        return
    checked = json.loads((run_dir / "run.json").read_text()).get("preflight")
    if checked:
        print(f"device: {checked['device']} ({checked['device_reason']})"
              + ("; the workers' conditions were NOT equal (--allow-unequal)" if checked["unequal"] else
                 "; every worker reported the same device model, threads and precision"))
    parity_path = run_dir / "parity.json"
    if parity_path.exists():
        parity = json.loads(parity_path.read_text())
        verdict = "passed" if parity["passed"] else "FAILED (see the report's parity section)"
        print(f"parity of {', '.join(c['worker'] for c in parity['counts'])}: {verdict}")
    for name, result in json.loads(metrics_path.read_text())["workers"].items():
        test, runs = result["test"], [run["test"]["macro_auroc"] for run in result["runs"]]
        auroc = "n/a" if test["macro_auroc"] is None else f"{test['macro_auroc']:.4f}"
        finite = [value for value in runs if value is not None]
        spread = (f" ± {result['test_std']['macro_auroc']:.4f} over {len(runs)} runs "
                  f"({min(finite):.4f}–{max(finite):.4f})" if len(finite) > 1 and result.get("test_std") else "")
        seconds = result["efficiency"]["seconds_per_epoch"]["median"]
        print(f"{name}: test macro AUROC {auroc}{spread} on {test['samples']} images, "
              f"{'n/a' if seconds is None else f'{seconds:.1f}'} s/epoch, "
              f"{result['parameters']['trainable']:,} trainable / "
              f"{result['parameters']['non_trainable']:,} non-trainable parameters")
    significance_path = run_dir / "significance.json"
    if significance_path.exists():
        from harness.report.verdicts import verdicts

        for line in verdicts(json.loads(significance_path.read_text())):
            print(line.replace("**", ""))


def _benchmark(args: argparse.Namespace) -> int:
    config = from_arguments(BenchmarkConfig, args, "benchmark")  # a bad value is refused before the heavy imports
    from harness.benchmark import run_benchmark

    run_dir = run_benchmark(config)
    _print_summary(run_dir)
    print(f"report: {run_dir / 'report.md'} and {run_dir / 'report.html'}")
    return 0


def _parity(args: argparse.Namespace) -> int:
    config, parity = from_arguments(BenchmarkConfig, args, "parity"), from_arguments(ParityOptions, args, "parity")
    from harness.parity_check import print_parity, run_parity

    return print_parity(run_parity(config, parity.steps), parity.json)


def _report(args: argparse.Namespace) -> int:
    from harness.report.assembly import rescore, write_report

    if not (args.run_dir / "run.json").is_file():
        raise ValueError(f"{args.run_dir}: not a run directory (no run.json)")
    config = from_arguments(BenchmarkConfig, args, "report")  # checks --bootstrap as benchmark does
    rescored = rescore(args.run_dir, config.bootstrap, config.cam_threshold, config.cam_components)
    if rescored:
        print(f"rescored from saved logits: {', '.join(rescored)}")
    print(write_report(args.run_dir))
    if config.mlflow is not None:
        from harness.tracking import log_run

        log_run(args.run_dir, config.mlflow, args.run_dir.parent)
    return 0


def _data_prepare(args: argparse.Namespace) -> int:
    config = from_arguments(BenchmarkConfig, args, "data prepare")  # checks --image-size as benchmark does
    if args.dataset == "chestmnist":
        from harness.data.datasets.chestmnist import load_chestmnist

        store = load_chestmnist(args.root, config.image_size, cache_root())
    else:
        from harness.data.datasets.nih import prepare_nih

        if args.processes is not None and args.processes < 1:
            raise ValueError(f"--processes: {args.processes} must be at least 1")
        prepared = prepare_nih(args.root, config.image_size, cache_root(), skip_bad=config.skip_bad,
                               processes=args.processes)
        store = prepared.store
        if prepared.reused:
            print("already prepared; nothing decoded")
    from harness.data.datasets.summary import summary_lines

    print("\n".join(summary_lines(store)))
    return 0


def _data_parser(subparsers) -> None:
    data = subparsers.add_parser("data", help="dataset commands")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    prepare = data_sub.add_parser(
        "prepare", help="decode and resize a dataset into the pixel store (parallel, resumable)",
        description="Decode every image once into the cached pixel store that benchmarks read. An interrupted "
                    "prepare resumes where it stopped; a store is used only once complete.")
    prepare.add_argument("dataset", choices=("nih", "chestmnist"))
    prepare.add_argument("--root", type=Path, required=True,
                         help="nih: the folder with Data_Entry_2017.csv and the images; "
                              "chestmnist: the .npz file or its folder")
    add_options(prepare, BenchmarkConfig, "data prepare")
    prepare.add_argument("--processes", type=int, default=None, help="decoding processes (default: one per core)")


def _workers_list(args: argparse.Namespace) -> int:
    from harness.runtime.environments import COMPLETE_MARKER, environment_path
    from harness.runtime.registry import discover_workers, pinned_version

    for worker in discover_workers().values():
        # Each variant on a line of its own, by the label --workers takes (keras[jax]); never in 'all'.
        for folder in (worker, *(worker.with_variant(variant) for variant in worker.variant_names)):
            if folder.requirements is None:
                environment = "runs in the harness's interpreter"
            else:
                target = environment_path(folder, cache_root())
                ready = target is not None and (target / COMPLETE_MARKER).is_file()
                environment = "environment ready" if ready else "environment created on first use"
            version = pinned_version(folder)
            pin = f"{folder.framework_package}=={version}" if version else "-"
            listed = "" if folder.listed and folder.variant is None else " (not in 'all')"
            print(f"{folder.label:<14} {pin:<18} {environment:<34} {folder.description}{listed}")
    return 0


def _workers_lock(args: argparse.Namespace) -> int:
    from harness.runtime.worker_locks import lock_workers

    for path, state in lock_workers(args.selection, args.upgrade):
        print(f"{state:<8} {path}")
    return 0


def _workers(args: argparse.Namespace) -> int:
    return _workers_lock(args) if args.workers_command == "lock" else _workers_list(args)


def _credentials(args: argparse.Namespace) -> int:
    from harness.runtime.credentials import make_credentials

    made = make_credentials(args.out, args.host)
    print(f"wrote {made.certificate} (self-signed, for localhost{''.join(', ' + h for h in args.host)}), "
          f"{made.private_key} and {made.token}")
    print(f"on each worker host: python -m cxrbench_worker --worker-dir workers/NAME --address 0.0.0.0:50051 "
          f"--tls-cert {made.certificate.name} --tls-key {made.private_key.name} --token-file {made.token.name}")
    print(f"here: harness benchmark --runtime remote --worker NAME=HOST:50051 --tls-ca {made.certificate} "
          f"--token-file {made.token}")
    return 0


def _register(args: argparse.Namespace) -> int:
    from harness.model_registry.command import run_register

    return run_register(args)


def _models(args: argparse.Namespace) -> int:
    from harness.model_registry.command import run_models_command

    return run_models_command(args)


def _predict(args: argparse.Namespace) -> int:
    from harness.serving.command import run_predict

    return run_predict(args)


def _app(args: argparse.Namespace) -> int:
    from harness.app.launch import run_app

    return run_app(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness",
                                     description="A fair benchmark of deep-learning frameworks on chest X-rays.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _benchmark_parser(subparsers)
    _parity_parser(subparsers)
    _data_parser(subparsers)
    report = subparsers.add_parser("report",
                                   help="rescore a run's saved logits and rebuild its report (Markdown and HTML)")
    report.add_argument("run_dir", type=Path)
    add_options(report, BenchmarkConfig, "report")
    credentials = subparsers.add_parser(
        "credentials", help="make a TLS certificate, key and token for workers that listen off loopback",
        description="Write tls.crt (self-signed; give it to --tls-ca), tls.key and token into a folder.")
    credentials.add_argument("--out", type=Path, required=True, help="folder to write into (made private, 0700)")
    credentials.add_argument("--host", action="append", default=[], metavar="NAME_OR_IP",
                             help="a host name or address the workers are reached at "
                                  "(repeatable; localhost is always in)")
    from harness.app.launch import add_app_parser
    from harness.model_registry.command import add_registry_parsers
    from harness.serving.arguments import add_predict_parser

    add_registry_parsers(subparsers)
    add_predict_parser(subparsers)
    add_app_parser(subparsers)
    workers = subparsers.add_parser("workers", help="worker commands")
    workers_sub = workers.add_subparsers(dest="workers_command", required=True)
    workers_sub.add_parser("list", help="list the available workers")
    lock = workers_sub.add_parser(
        "lock", help="resolve the workers' hashed lock files (workers/<name>/locks/) that are missing or stale",
        description="Resolve with uv, into workers/<name>/locks/<version>-cpu.txt and -gpu.txt, every package a "
                    "worker version installs, with hashes. Current locks are kept. Commit what it writes.")
    lock.add_argument("selection", nargs="?", default=None, metavar="NAME[@VERSION],...",
                      help="workers to lock, e.g. keras or keras@3.14.0 (default: every listed worker at its "
                           "pinned version, and every version that already has a lock)")
    lock.add_argument("--upgrade", action="store_true",
                      help="re-resolve even current locks, letting every unpinned package move to its newest release")
    return parser


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `harness` command."""
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # cleanup (stopping workers) runs as for Ctrl-C
    handlers = {"benchmark": _benchmark, "parity": _parity, "report": _report, "workers": _workers,
                "data": _data_prepare, "credentials": _credentials, "register": _register, "models": _models,
                "predict": _predict, "app": _app}
    try:
        return handlers[args.command](args)
    except (RuntimeError, OSError) as error:  # WorkerError, environment set-up, files
        print(f"harness: error: {error}", file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"harness: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted; workers stopped, results written so far are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
