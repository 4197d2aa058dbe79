"""What a command was asked to do: one dataclass per command, each field declared once with its option.

`BenchmarkConfig` decides a benchmark run (and, with `ParityOptions`, a `harness parity` run); it is
validated on creation and saved with every run. Every field that is a command-line option is
declared with `harness.options.option`, so its flag, default, help, choices and check live on the
field alone: the parsers, the validation and the README's table all come from here.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from harness.cluster.settings import PLACEMENTS, ClusterSettings
from harness.config_checks import (
    RAY_OPTIONS,
    addressed_options,
    cam_threshold_check,
    check_combinations,
    check_named_workers,
    init_check,
    not_negative,
    option_form,
    python_form,
    refusal,
    seeds_check,
)
from harness.data.augmentation import Augmentation
from harness.data.datasets import parse_dataset
from harness.data.parallel import MAX_DEFAULT_THREADS, default_threads
from harness.evaluation.comparison import DEFAULT_MARGIN
from harness.models.architectures import ARCHITECTURE_NAMES
from harness.options import (
    at_least,
    integer_list,
    markdown_table,
    option,
    positive_finite,
    raise_problems,
    readme_with_table,
    within,
)
from harness.runtime.registry import WorkerSpec, resolve_workers
from harness.runtime.selection import RUNTIMES, RuntimeChoice
from harness.runtime.stream_watchdog import DEFAULT_STALL_FLOOR_SECONDS
from harness.training.parity import PARITY_BATCH_SIZE, PARITY_STEPS
from harness.training.schedule import (
    DEFAULT_EARLY_STOP,
    DEFAULT_FACTOR,
    DEFAULT_MIN_LR,
    DEFAULT_PATIENCE,
    DEFAULT_THRESHOLD,
    ScheduleSettings,
)
from harness.training.settings import PRECISIONS, TrainingSettings

BENCHMARK_AND_PARITY = ("benchmark", "parity")
DEVICES = ("auto", "cpu", "cuda")
LOCALIZE_CHOICES = ("auto", "on", "off")
DEFAULT_RUNS = 3  # training seeds per worker by default: the fewest that measure training noise at all
RUNTIME_GROUP = "runtime (where the workers run)"
SCHEDULE_GROUP = "schedule (decided by the harness from validation loss, the same for every worker)"


def cache_root() -> Path:
    """Where environments, pixel stores and converted weights are cached: $CXRBENCH_CACHE or ~/.cache/cxrbench."""
    return Path(os.environ.get("CXRBENCH_CACHE", Path.home() / ".cache" / "cxrbench"))


@dataclass(frozen=True)
class BenchmarkConfig:
    """Everything that decides what a benchmark run does (fields without an option are for tests)."""

    workers: str = option(
        "all", "--workers", "`all` (every listed worker), or a comma list; `NAME@VERSION` runs that framework "
        "version, e.g. `keras@3.14.0,keras@3.15.1` side by side; `NAME[VARIANT]` a variant of a worker, e.g. "
        "`'keras,keras[jax],keras[torch]'` (Keras on TensorFlow, JAX and torch; quote it for zsh)", metavar="LIST")
    dataset: str = option(
        "phantom", "--dataset", "`phantom` (built-in synthetic radiographs), `nih:PATH` (an NIH ChestX-ray14 "
        "folder) or `chestmnist:PATH` (a MedMNIST `.npz` file or folder)",
        metavar="phantom|nih:PATH|chestmnist:PATH", check=refusal(parse_dataset))
    architecture: str = option(
        "resnet50", "--arch", "`resnet50` (torchvision's v1.5) or `densenet121`, both with a 14-logit head",
        choices=ARCHITECTURE_NAMES)
    epochs: int = option(2, "--epochs", "training epochs", commands=("benchmark",), parse=int, check=at_least(1))
    batch_size: int = option(
        32, "--batch-size", "images per training batch; an incomplete last batch is dropped for every worker alike",
        parse=int, check=at_least(2, " (BatchNorm needs 2 images)"), command_defaults={"parity": PARITY_BATCH_SIZE})
    eval_batch_size: int = 128
    # Sized for a 2-core laptop CPU: ResNet-50 at 48x48 trains at about 70 img/s there (64x64: about 52).
    image_size: int = option(48, "--image-size", "square image side in pixels",
                             commands=("benchmark", "parity", "data prepare"), parse=int, check=within(32, 1024))
    learning_rate: float = option(3e-4, "--lr", "Adam learning rate", parse=float, check=positive_finite)
    seed: int = option(
        0, "--seed", "the data seed: the phantom, the patient split and folds; also the first training seed "
        "unless `--seeds` is given", parse=int, check=not_negative())
    seeds: tuple[int, ...] = option(
        (), "--seeds", "training seeds, e.g. `0,1,2,3,4`: one run per seed (and fold), each with its own starting "
        "weights, batch order and augmentation, the same for every worker, so runs pair across workers; the spread "
        "over runs is the training noise every verdict is measured against (one seed: every verdict undetermined)",
        commands=("benchmark",), parse=integer_list, metavar="S,S,...", check=seeds_check,
        shown_default=f"{DEFAULT_RUNS} seeds from `--seed`")
    folds: int = option(1, "--folds", "K > 1: K-fold cross-validation grouped by patient; mean ± std over folds",
                        commands=("benchmark",), parse=int, check=within(1, 20, " (1: no cross-validation)"))
    augment: str = option(
        "flip,rotate=20", "--augment", "training augmentation by the harness: `flip`, `rotate=DEG`, both "
        "comma-separated, or `none`", commands=("benchmark",), metavar="SPEC", check=refusal(Augmentation.parse))
    init: str = option(
        "random", "--init", "`random` (torchvision's scheme, drawn by the harness) or `imagenet=PATH`: a torchvision "
        "checkpoint you have (`.pth`, read without torch; never downloaded), backbone kept, 14-logit head drawn",
        metavar="random|imagenet=PATH", check=init_check)
    options: tuple[str, ...] = option(
        (), "--option", "`WORKER.KEY=VALUE`, repeatable: a framework switch, e.g. `tensorflow.jit_compile=true` "
        "(XLA, off by default); `keras.KEY` reaches every Keras worker (versions and variants), `keras[jax].KEY` "
        "that variant alone", kind="repeat", metavar="WORKER.KEY=VALUE", check=option_form)
    precision: str = option("fp32", "--precision", "numerics for every worker: `fp32` (TF32 off); `bf16-mixed`, "
                            "`fp16-mixed`: the network computes in bfloat16 / float16 on float32 weights, BatchNorm "
                            "statistics and the loss in float32, fp16 with dynamic loss scaling; all three run on CPUs",
                            choices=PRECISIONS)
    deterministic: bool = option(
        False, "--deterministic", "timed runs with the frameworks' deterministic algorithms (slower; PyTorch then "
        "turns cuDNN autotuning off); off by default, so speed is measured as users train. Parity probes are "
        "always deterministic", commands=("benchmark",), kind="switch")
    device: str = option(
        "auto", "--device", "`cpu` or `cuda` for every worker; `auto`: `cuda` where every worker can see a CUDA "
        "device, else `cpu` (the choice and its reason are in the summary and the report). The local runtime "
        "builds each worker's environment for that device", choices=DEVICES)
    pythons: tuple[str, ...] = option(
        (), "--python", "local runtime: run a worker with an interpreter you already have (a conda env, a cluster "
        "module, a vendor image), e.g. `pytorch=/opt/conda/bin/python`; no environment is built, and the versions "
        "it reports are recorded (repeatable)", kind="repeat", metavar="NAME=PATH", group=RUNTIME_GROUP,
        check=python_form)
    allow_unequal: bool = option(
        False, "--allow-unequal", "run even when the workers report different devices, device models, thread "
        "counts or precisions (refused otherwise, before any training); the report then opens with a warning",
        commands=("benchmark",), kind="switch")
    threads: int = option(0, "--threads", "intra-op threads per worker; 0: the framework's default", parse=int,
                          check=not_negative(" (0: the framework's default)"))
    data_threads: int = option(
        default_threads(), "--data-threads", "threads that build the harness's batches (augment, encode, hash); the "
        "batches, their bytes and their order are the same for any number", commands=("benchmark",), parse=int,
        check=at_least(1), shown_default=f"min({MAX_DEFAULT_THREADS}, CPU cores)")
    patients: int | None = option(None, "--patients", "phantom: number of patients", parse=int, check=at_least(10),
                                  shown_default="the phantom's")
    skip_bad: bool = option(False, "--skip-bad", "`nih`: skip and list bad rows and images instead of stopping at "
                            "the first", commands=("benchmark", "parity", "data prepare"), kind="switch")
    out: Path = option(Path("results"), "--out", "where run directories go", commands=("benchmark",), parse=Path)
    shuffle_labels: bool = option(False, "--shuffle-labels", "control run: training and validation labels permuted "
                                  "across images; expect a test AUROC near 0.5 or below (never clearly above: that "
                                  "would be a leak)", commands=("benchmark",), kind="switch")
    localize: str = option(
        "auto", "--localize", "class activation maps of the test images that have radiologists' (or the phantom's) "
        "boxes, computed by the harness from each worker's final feature maps and head weights and scored against "
        "the boxes: `auto` (on where the dataset has boxes: the phantom, `nih` with `BBox_List_2017.csv`), `on` (the "
        "value when given alone; refused without boxes) or `off`. Maps need feature maps of at least 4 x 4: 128 px",
        commands=("benchmark",), kind="optional", const="on", choices=LOCALIZE_CHOICES)
    cam_threshold: str = option(
        "tuned", "--cam-threshold", "localisation: the map (min-max normalised) is cut at this value into regions; "
        "`tuned`: per finding, the value in 0.05..0.95 with the best mean IoU on the validation images' boxes "
        "(0.5 for a finding without any)", commands=("benchmark", "report"), metavar="tuned|VALUE",
        check=cam_threshold_check)
    cam_components: str = option(
        "all", "--cam-components", "localisation: the detected boxes are the bounding boxes of `all` connected "
        "regions above the threshold, or of the `largest` only", commands=("benchmark", "report"),
        choices=("all", "largest"))
    split_fractions: tuple[float, float, float] = field(default=(0.7, 0.1, 0.2))
    # The harness's schedule (harness.training.schedule): ReduceLROnPlateau, checkpoint choice, early stopping.
    lr_factor: float = option(
        DEFAULT_FACTOR, "--lr-factor", "ReduceLROnPlateau: multiply the rate by this on a plateau",
        commands=("benchmark",), parse=float, group=SCHEDULE_GROUP,
        check=lambda value: None if 0 < value < 1 else f"{value} must be within (0, 1)")
    lr_patience: int = option(
        DEFAULT_PATIENCE, "--lr-patience", "ReduceLROnPlateau: reduce once more than this many epochs in a "
        "row did not improve validation loss (torch's rule)", commands=("benchmark",), parse=int, group=SCHEDULE_GROUP,
        check=not_negative())
    min_lr: float = option(
        DEFAULT_MIN_LR, "--min-lr", "ReduceLROnPlateau: never below this rate", commands=("benchmark",),
        parse=float, group=SCHEDULE_GROUP, check=lambda value: None if value >= 0 else f"{value} must be >= 0")
    lr_threshold: float = option(
        DEFAULT_THRESHOLD, "--lr-threshold", "ReduceLROnPlateau: relative improvement of validation loss "
        "that counts", commands=("benchmark",), parse=float, group=SCHEDULE_GROUP,
        check=lambda value: None if 0 <= value < 1 else f"{value} must be within [0, 1)")
    early_stop: int = option(
        DEFAULT_EARLY_STOP, "--early-stop", "stop after this many epochs without a new best validation loss "
        "(0: never); the best checkpoint is the one tested", commands=("benchmark",), parse=int, group=SCHEDULE_GROUP,
        check=not_negative(" (0: never stop early)"))
    equivalence_margin: float = option(
        DEFAULT_MARGIN, "--equivalence-margin", "macro and per-label AUROC: two workers are called equivalent when "
        "the 95% interval of their difference lies inside ± this (docs/STATISTICS.md)", commands=("benchmark",),
        parse=float, check=lambda value: None if 0 < value < 1 else f"{value} must be between 0 and 1")
    bootstrap: int = option(
        1000, "--bootstrap", "patient-level bootstrap resamples for confidence intervals and the test set's share "
        "of every verdict (0: no verdicts)",
        commands=("benchmark", "report"), parse=int,
        check=lambda value: None if value == 0 or value >= 100 else f"{value} must be 0 (off) or at least 100")
    mlflow: str | None = option(
        None, "--mlflow", "log parameters, per-epoch and final metrics and the report to MLflow at URI; no URI: a "
        "SQLite store beside the run directories, `RESULTS/mlflow.db` (browse it with the full `mlflow` package: "
        "`mlflow ui --backend-store-uri sqlite:///results/mlflow.db`)", commands=("benchmark", "report"),
        kind="optional", const="", metavar="URI")
    register: str | None = option(
        None, "--register", "after the run, put every run's kept model into the MLflow model registry at URI, each "
        "with its model card (`harness register RUN_DIR` does it later); no URI: `RESULTS/mlflow.db`",
        commands=("benchmark",), kind="optional", const="", metavar="URI")
    runtime: str = option(
        "local", "--runtime", "`local` (a virtual environment per worker; no Docker, no GPU needed), `docker` "
        "(`compose.yaml`'s GPU containers, built when missing), `remote` (workers already running elsewhere: "
        "`--worker`) or `ray` (the runs spread over a Ray cluster, each worker in its local environment on its node; "
        "needs `cxrbench[cluster]`, docs/CLUSTER.md)", choices=RUNTIMES, group=RUNTIME_GROUP)
    remote_workers: tuple[str, ...] = option(
        (), "--worker", "remote: where a worker listens, e.g. `keras=gpu1.example.org:50051` (repeatable)",
        kind="repeat", metavar="NAME=HOST:PORT", group=RUNTIME_GROUP)
    tls_ca: str | None = option(
        None, "--tls-ca", "remote: certificate(s) to trust for the workers' TLS (e.g. `tls.crt` from "
        "`harness credentials`)", metavar="PEM", group=RUNTIME_GROUP, shown_default="the system's roots")
    token_file: str | None = option(
        None, "--token-file", "remote: file holding the workers' bearer token", metavar="FILE", group=RUNTIME_GROUP,
        shown_default="`$CXRBENCH_TOKEN`")
    ray_address: str = option(
        "auto", "--ray-address", "ray: the cluster, `HOST:PORT` of its head; `auto`: the one `$RAY_ADDRESS` or a "
        "`ray start` on this machine names, else a Ray started for this study alone (docs/CLUSTER.md)",
        commands=("benchmark",), metavar="ADDRESS", group=RUNTIME_GROUP)
    placement: str = option(
        "any", "--placement", "ray: `any` (each run on any free GPU), `grouped` (the workers of one seed and fold "
        "side by side on one node, so every framework has the same neighbours) or `exclusive` (one run per node); "
        "each run records its node and neighbours", commands=("benchmark",), choices=PLACEMENTS, group=RUNTIME_GROUP)
    cpus_per_run: int = option(
        1, "--cpus-per-run", "ray: CPUs each run reserves beside its GPU (on a cluster without GPUs: all it gets)",
        commands=("benchmark",), parse=int, check=at_least(1), group=RUNTIME_GROUP)
    retries: int = option(
        2, "--retries", "ray: times a run whose worker or node was lost is redone, wherever Ray has room (its "
        "partial timings discarded)", commands=("benchmark",), parse=int, check=within(0, 2), group=RUNTIME_GROUP)
    allow_mixed_gpus: bool = option(
        False, "--allow-mixed-gpus", "ray: run on a cluster whose nodes have different GPU models (refused "
        "otherwise: the model would be credited to the frameworks)", commands=("benchmark",), kind="switch",
        group=RUNTIME_GROUP)
    resume: Path | None = option(
        None, "--resume", "finish the interrupted study in RUN_DIR: its settings come from its run.json (only the "
        "runtime options may change), data, code and environments must be unchanged, and only the runs without a "
        "finished record run", commands=("benchmark",), parse=Path, metavar="RUN_DIR")
    stall_timeout: float = option(
        DEFAULT_STALL_FLOOR_SECONDS, "--stall-timeout", "seconds a worker may leave a training or prediction "
        "batch unanswered before the run fails as stalled: the floor of the watchdog's limit, max(SECONDS, "
        "20 x the median step so far); it alone covers a run's first step, which may compile",
        commands=BENCHMARK_AND_PARITY, parse=float, check=positive_finite, metavar="SECONDS", group=RUNTIME_GROUP)

    def __post_init__(self) -> None:
        raise_problems(self)
        check_combinations(self, BENCHMARK_DEFAULTS)  # the rules tying options together

    @property
    def dataset_kind(self) -> str:
        """phantom, nih or chestmnist."""
        return parse_dataset(self.dataset)[0]

    @property
    def training_seeds(self) -> tuple[int, ...]:
        """The runs' training seeds: --seeds, else DEFAULT_RUNS seeds from the data seed on."""
        return self.seeds or tuple(range(self.seed, self.seed + DEFAULT_RUNS))

    @property
    def schedule(self) -> ScheduleSettings:
        return ScheduleSettings(self.lr_factor, self.lr_patience, self.min_lr, self.lr_threshold, self.early_stop)

    @property
    def augmentation(self) -> Augmentation:
        return Augmentation.parse(self.augment)

    @property
    def runtime_choice(self) -> RuntimeChoice:
        """What the runtime needs of this config."""
        return RuntimeChoice(self.runtime, self.remote_workers, self.tls_ca, self.token_file,
                             self.interpreters)

    @property
    def interpreters(self) -> dict[str, Path]:
        """--python: worker label -> the existing interpreter that runs it."""
        return {name: Path(path).expanduser() for name, _, path in (e.partition("=") for e in self.pythons)}

    def training(self, worker: str = "") -> TrainingSettings:
        """What the training loop and the parity probe need: the same for every worker but for its --option switches."""
        return TrainingSettings(
            architecture=self.architecture, image_size=self.image_size, learning_rate=self.learning_rate,
            seed=self.seed, epochs=self.epochs, batch_size=self.batch_size, eval_batch_size=self.eval_batch_size,
            augmentation=self.augmentation, schedule=self.schedule, precision=self.precision,
            deterministic=self.deterministic, threads=self.threads, data_threads=self.data_threads,
            options=self.worker_options(worker),
        )

    def localizes(self, boxes: int) -> bool:
        """Whether the runs save class activation maps, given the number of boxes the dataset has;
        ValueError for `--localize on` without boxes."""
        if self.localize == "on" and not boxes:
            raise ValueError(f"--localize: the dataset {self.dataset!r} has no bounding boxes to score maps against "
                             "(NIH needs BBox_List_2017.csv beside Data_Entry_2017.csv; ChestMNIST has none)")
        return self.localize == "on" or (self.localize == "auto" and boxes > 0)

    def worker_options(self, worker: str) -> dict[str, str]:
        """The --option switches addressed to `worker`, as KEY -> VALUE (config_checks.addressed_options)."""
        return addressed_options(worker, self.options)

    def selected_workers(self) -> list[WorkerSpec]:
        """The run's workers: --workers, where "all" under --runtime remote means the --worker names;
        ValueError when a --python or --option entry names a worker not among them."""
        selection = self.workers
        if self.runtime == "remote" and selection == "all":
            selection = ",".join(entry.partition("=")[0] for entry in self.remote_workers)
        workers = resolve_workers(selection)
        check_named_workers([spec.label for spec in workers], self.interpreters, self.options)
        return workers

    def cluster_settings(self, device: str) -> ClusterSettings:
        """What the Ray executor needs: where the cluster is, how runs are placed, and what each reserves."""
        return ClusterSettings(self.ray_address, self.placement, self.cpus_per_run, self.retries,
                               self.allow_mixed_gpus, device, self.threads, self.interpreters)

    @classmethod
    def from_dict(cls, data: dict) -> BenchmarkConfig:
        """The config that to_dict() wrote (run.json's "config"); ValueError naming a field it does not know."""
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"config: unknown field(s) {', '.join(unknown)} (written by another harness version?)")
        values: dict[str, Any] = {name: tuple(value) if isinstance(value, list) else value
                                  for name, value in data.items()}
        values["out"] = Path(values["out"])
        if values.get("resume") is not None:
            values["resume"] = Path(values["resume"])
        return cls(**values)

    def resumed_from(self, saved: dict) -> BenchmarkConfig:
        """The config of a study resumed with this command line: its run.json's `saved` config, but for
        where it runs (RESUME_MAY_CHANGE), which is taken from this one."""
        return replace(BenchmarkConfig.from_dict(saved), **{name: getattr(self, name) for name in RESUME_MAY_CHANGE})

    def to_dict(self) -> dict:
        """Plain JSON-ready values."""
        data = asdict(self)
        data["out"] = str(self.out)
        data["split_fractions"] = list(self.split_fractions)
        data["options"] = list(self.options)
        data["remote_workers"] = list(self.remote_workers)
        data["pythons"] = list(self.pythons)
        data["seeds"] = list(self.training_seeds)
        data["resume"] = None if self.resume is None else str(self.resume)
        return data


@dataclass(frozen=True)
class ParityOptions:
    """What `harness parity` takes beyond the BenchmarkConfig options it shares with `benchmark`."""

    steps: int = option(PARITY_STEPS, "--steps", "training steps compared", commands=("parity",), parse=int,
                        check=at_least(1))
    json: Path | None = option(None, "--json", "also write the summary to this JSON file", commands=("parity",),
                               parse=Path, metavar="PATH")

    def __post_init__(self) -> None:
        raise_problems(self)


BENCHMARK_DEFAULTS = {item.name: item.default for item in fields(BenchmarkConfig)}
# What a resumed study may run differently: where and how its runs execute, never what they compute.
RESUME_MAY_CHANGE = ("runtime", *RAY_OPTIONS, "pythons", "remote_workers", "tls_ca", "token_file", "stall_timeout",
                     "data_threads", "mlflow", "register", "resume")


def options_table() -> str:
    """The README's table of `benchmark` and `parity` options."""
    return markdown_table((BenchmarkConfig, ParityOptions), BENCHMARK_AND_PARITY)


def main(argv: list[str] | None = None) -> int:
    """`python -m harness.config README.md`: regenerate the README's options table in place."""
    paths = [Path(arg) for arg in (sys.argv[1:] if argv is None else argv)] or [Path("README.md")]
    for path in paths:
        text = path.read_text()
        updated = readme_with_table(text, options_table())
        path.write_text(updated)
        print(f"{path}: options table {'updated' if updated != text else 'already current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
