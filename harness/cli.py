"""The `harness` command line: benchmark, parity, data prepare, report, workers list and lock."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from harness.config import ARCHITECTURES, DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_IMAGE_SIZE, DEFAULT_LEARNING_RATE, PRECISIONS, RUNTIMES, BenchmarkConfig, require_image_size
from harness.datasets import DATASET_FORMS
from harness.parity import PARITY_BATCH_SIZE, PARITY_STEPS
from harness.schedule import ScheduleSettings


def _common_options(parser: argparse.ArgumentParser) -> None:
    """Options `benchmark` and `parity` share: what is built, from what, on which data."""
    parser.add_argument("--workers", default="all",
                        help="'all' or a comma-separated list, each optionally at a framework version, e.g. "
                             "pytorch,keras or keras@3.14.0,keras@3.15.1 (side by side) (default: all)")
    parser.add_argument("--dataset", default="phantom", metavar="phantom|nih:PATH|chestmnist:PATH",
                        help=f"dataset: {DATASET_FORMS} (default: phantom)")
    parser.add_argument("--arch", default="resnet50", choices=ARCHITECTURES, help="architecture (default: resnet50)")
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE, help=f"square image side in pixels (default: {DEFAULT_IMAGE_SIZE})")
    parser.add_argument("--lr", type=float, default=DEFAULT_LEARNING_RATE, help=f"Adam learning rate (default: {DEFAULT_LEARNING_RATE})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, split, batch order and initial weights (default: 0)")
    parser.add_argument("--init", default="random", metavar="random|imagenet=PATH",
                        help="initial weights: 'random' (torchvision's scheme, drawn by the harness) or "
                             "'imagenet=PATH' (a torchvision ImageNet checkpoint file you have; never downloaded)")
    parser.add_argument("--option", action="append", default=[], metavar="WORKER.KEY=VALUE",
                        help="a framework-specific switch, e.g. tensorflow.jit_compile=true (repeatable)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="numerics for every worker (default: fp32)")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads per worker; 0: framework default")
    parser.add_argument("--patients", type=int, default=None, help="phantom: number of patients (default: the phantom's)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="nih: skip bad rows and images (all listed in the report) instead of stopping at the first")
    runtime = parser.add_argument_group("runtime (where the workers run)")
    runtime.add_argument("--runtime", default="local", choices=RUNTIMES,
                         help="local: a virtual environment per worker (default; no Docker, no GPU needed); docker: "
                              "compose.yaml's GPU containers, built when missing; remote: workers already running "
                              "elsewhere (--worker)")
    runtime.add_argument("--worker", action="append", default=[], metavar="NAME=HOST:PORT", dest="remote_workers",
                         help="remote: where a worker listens, e.g. keras=gpu1.example.org:50051 (repeatable)")
    runtime.add_argument("--tls-ca", default=None, metavar="PEM",
                         help="remote: certificate(s) to trust for the workers' TLS (e.g. tls.crt from "
                              "`harness credentials`); default: the system's roots")
    runtime.add_argument("--token-file", default=None, metavar="FILE",
                         help="remote: file holding the workers' bearer token (or set $CXRBENCH_TOKEN)")


def _benchmark_parser(subparsers) -> None:
    parser = subparsers.add_parser("benchmark", help="train and evaluate workers on the same data",
                                   description="Train every selected worker on identical batches and report.")
    _common_options(parser)
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help=f"epochs (default: {DEFAULT_EPOCHS})")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help=f"training batch size (default: {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--out", type=Path, default=Path("results"), help="results folder (default: results)")
    parser.add_argument("--shuffle-labels", action="store_true", help="control: shuffle training labels; expect AUROC ~0.5")
    parser.add_argument("--folds", type=int, default=1,
                        help="K > 1: K-fold cross-validation grouped by patient, reported per fold and as mean +- std "
                             "(default: 1, one train / validation split)")
    parser.add_argument("--augment", default="flip,rotate=20", metavar="SPEC",
                        help="training augmentation done by the harness: 'flip', 'rotate=DEG', both comma-separated, "
                             "or 'none' (default: flip,rotate=20)")
    parser.add_argument("--seeds", type=_seed_list, default=(), metavar="S,S,...",
                        help="training seeds, one run per seed (and fold): starting weights, batch order and "
                             "augmentation; --seed keeps fixing the data, test set and folds (default: --seed)")
    schedule = parser.add_argument_group("schedule (decided by the harness from validation loss, the same for every worker)")
    schedule.add_argument("--lr-factor", type=float, default=ScheduleSettings.factor,
                          help=f"ReduceLROnPlateau: multiply the rate by this on a plateau (default: {ScheduleSettings.factor})")
    schedule.add_argument("--lr-patience", type=int, default=ScheduleSettings.patience,
                          help="ReduceLROnPlateau: reduce once more than this many epochs in a row did not improve "
                               f"validation loss (torch's rule; default: {ScheduleSettings.patience})")
    schedule.add_argument("--min-lr", type=float, default=ScheduleSettings.min_lr,
                          help=f"ReduceLROnPlateau: never below this rate (default: {ScheduleSettings.min_lr:g})")
    schedule.add_argument("--lr-threshold", type=float, default=ScheduleSettings.threshold,
                          help=f"relative improvement that counts (default: {ScheduleSettings.threshold:g})")
    schedule.add_argument("--early-stop", type=int, default=ScheduleSettings.early_stop,
                          help="stop after this many epochs without a new best validation loss; 0: never "
                               f"(default: {ScheduleSettings.early_stop}). The best checkpoint is always the one tested")
    _evaluation_options(parser)
    parser.add_argument("--mlflow", nargs="?", const="", default=None, metavar="URI",
                        help="log parameters, per-epoch and final metrics and the report to MLflow at URI "
                             "(no URI: a local store, RESULTS/mlflow.db)")


def _seed_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must be comma-separated integers, e.g. 0,1,2") from None


def _evaluation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", type=int, default=1000,
                        help="patient-level bootstrap resamples for confidence intervals and paired tests; 0: none (default: 1000)")


def _parity_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "parity", help="prove the workers compute the same network (exit 1 when a tolerance is exceeded)",
        description="Load the same weights into every worker, feed the same batches, compare logits, losses, "
                    "parameter counts and cross-loaded weights.")
    _common_options(parser)
    parser.add_argument("--batch-size", type=int, default=PARITY_BATCH_SIZE, help=f"images per parity batch (default: {PARITY_BATCH_SIZE})")
    parser.add_argument("--steps", type=int, default=PARITY_STEPS, help=f"training steps compared (default: {PARITY_STEPS})")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary to this JSON file")


def _config_from(args: argparse.Namespace) -> BenchmarkConfig:
    benchmark_only = {}
    if args.command == "benchmark":
        benchmark_only = {"epochs": args.epochs, "out": args.out, "shuffle_labels": args.shuffle_labels,
                          "folds": args.folds, "augment": args.augment, "seeds": args.seeds, "lr_factor": args.lr_factor,
                          "lr_patience": args.lr_patience, "min_lr": args.min_lr, "lr_threshold": args.lr_threshold,
                          "early_stop": args.early_stop, "bootstrap": args.bootstrap, "mlflow": args.mlflow}
    return BenchmarkConfig(
        workers=args.workers, dataset=args.dataset, architecture=args.arch, batch_size=args.batch_size,
        image_size=args.image_size, learning_rate=args.lr, seed=args.seed, precision=args.precision,
        threads=args.threads, patients=args.patients, init=args.init, skip_bad=args.skip_bad, options=tuple(args.option),
        runtime=args.runtime, remote_workers=tuple(args.remote_workers), tls_ca=args.tls_ca, token_file=args.token_file,
        **benchmark_only,
    )


def _print_summary(run_dir: Path) -> None:
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.exists():
        return
    parity_path = run_dir / "parity.json"
    if parity_path.exists():
        parity = json.loads(parity_path.read_text())
        verdict = "passed" if parity["passed"] else "FAILED (see the report's parity section)"
        print(f"parity of {', '.join(c['worker'] for c in parity['counts'])}: {verdict}")
    for name, result in json.loads(metrics_path.read_text())["workers"].items():
        test = result["test"]
        auroc = "n/a" if test["macro_auroc"] is None else f"{test['macro_auroc']:.4f}"
        runs = len(result["runs"])
        seconds = result["efficiency"]["seconds_per_epoch"]["median"]
        print(f"{name}: test macro AUROC {auroc}{f' (mean of {runs} runs)' if runs > 1 else ''} on {test['samples']} images, "
              f"{'n/a' if seconds is None else f'{seconds:.1f}'} s/epoch, "
              f"{result['parameters']['trainable']:,} trainable / {result['parameters']['non_trainable']:,} non-trainable parameters")
    significance_path = run_dir / "significance.json"
    if significance_path.exists():
        from harness.significance_text import verdicts

        for line in verdicts(json.loads(significance_path.read_text())):
            print(line.replace("**", ""))


def _benchmark(args: argparse.Namespace) -> int:
    from harness.benchmark import run_benchmark

    run_dir = run_benchmark(_config_from(args))
    _print_summary(run_dir)
    print(f"report: {run_dir / 'report.md'} and {run_dir / 'report.html'}")
    return 0


def _parity(args: argparse.Namespace) -> int:
    from harness.parity_run import print_parity, run_parity

    if args.steps < 1:
        raise ValueError(f"--steps: {args.steps} must be at least 1")
    return print_parity(run_parity(_config_from(args), args.steps), args.json)


def _report(args: argparse.Namespace) -> int:
    from harness.report import rescore, write_report

    if not (args.run_dir / "run.json").is_file():
        raise ValueError(f"{args.run_dir}: not a run directory (no run.json)")
    if args.bootstrap and args.bootstrap < 100:
        raise ValueError(f"--bootstrap: {args.bootstrap} must be 0 (off) or at least 100")
    rescored = rescore(args.run_dir, args.bootstrap)
    if rescored:
        print(f"rescored from saved logits: {', '.join(rescored)}")
    print(write_report(args.run_dir))
    if args.mlflow is not None:
        from harness.tracking import log_run

        log_run(args.run_dir, args.mlflow, args.run_dir.parent)
    return 0


def _data_prepare(args: argparse.Namespace) -> int:
    from harness.runtime.environments import cache_root

    require_image_size(args.image_size)
    if args.dataset == "chestmnist":
        from harness.datasets.chestmnist import load_chestmnist

        store = load_chestmnist(args.root, args.image_size, cache_root())
    else:
        from harness.datasets.nih import prepare_nih

        if args.processes is not None and args.processes < 1:
            raise ValueError(f"--processes: {args.processes} must be at least 1")
        prepared = prepare_nih(args.root, args.image_size, cache_root(), skip_bad=args.skip_bad, processes=args.processes)
        store = prepared.store
        if prepared.reused:
            print("already prepared; nothing decoded")
    from harness.datasets.summary import summary_lines

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
                         help="nih: the folder with Data_Entry_2017.csv and the images; chestmnist: the .npz file or its folder")
    prepare.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE, help=f"square side in pixels (default: {DEFAULT_IMAGE_SIZE})")
    prepare.add_argument("--skip-bad", action="store_true", help="skip bad rows and images, and list them, instead of stopping at the first")
    prepare.add_argument("--processes", type=int, default=None, help="decoding processes (default: one per core)")


def _workers_list(args: argparse.Namespace) -> int:
    from harness.registry import discover_workers, pinned_version
    from harness.runtime.environments import COMPLETE_MARKER, environment_path

    for name, folder in discover_workers().items():
        if folder.requirements is None:
            environment = "runs in the harness's interpreter"
        else:
            target = environment_path(folder)
            ready = target is not None and (target / COMPLETE_MARKER).is_file()
            environment = "environment ready" if ready else "environment created on first use"
        version = pinned_version(folder)
        pin = f"{folder.framework_package}=={version}" if version else "-"
        listed = "" if folder.listed else " (not in 'all')"
        print(f"{name:<12} {pin:<18} {environment:<34} {folder.description}{listed}")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description="A fair benchmark of deep-learning frameworks on chest X-rays.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _benchmark_parser(subparsers)
    _parity_parser(subparsers)
    _data_parser(subparsers)
    report = subparsers.add_parser("report", help="rescore a run's saved logits and rebuild its report (Markdown and HTML)")
    report.add_argument("run_dir", type=Path)
    _evaluation_options(report)
    report.add_argument("--mlflow", nargs="?", const="", default=None, metavar="URI",
                        help="also log the run to MLflow at URI (no URI: RUN_DIR/../mlflow.db)")
    credentials = subparsers.add_parser(
        "credentials", help="make a TLS certificate, key and token for workers that listen off loopback",
        description="Write tls.crt (self-signed; give it to --tls-ca), tls.key and token into a folder.")
    credentials.add_argument("--out", type=Path, required=True, help="folder to write into (made private, 0700)")
    credentials.add_argument("--host", action="append", default=[], metavar="NAME_OR_IP",
                             help="a host name or address the workers are reached at (repeatable; localhost is always in)")
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
    handlers = {"benchmark": _benchmark, "parity": _parity, "report": _report, "workers": _workers, "data": _data_prepare,
                "credentials": _credentials}
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
