"""The benchmark configuration: one dataclass, validated on creation, saved with every run."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.augmentation import Augmentation
from harness.datasets import parse_dataset
from harness.schedule import ScheduleSettings

ARCHITECTURES = ("resnet50", "densenet121")
PRECISIONS = ("fp32", "mixed")
RUNTIMES = ("local", "docker", "remote")
# Sized for a 2-core laptop CPU: ResNet-50 at 64x64 trains at about 60 img/s there.
DEFAULT_EPOCHS = 5
DEFAULT_IMAGE_SIZE = 64
DEFAULT_BATCH_SIZE = 32
DEFAULT_LEARNING_RATE = 1e-3
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def require_image_size(size: int) -> None:
    """ValueError naming --image-size unless ResNet-50 and DenseNet-121 can take `size` (and it is sane)."""
    if not 32 <= size <= 1024:
        raise ValueError(f"--image-size: {size} must be within 32..1024")


@dataclass(frozen=True)
class BenchmarkConfig:
    """Everything that decides what a benchmark run does."""

    workers: str = "all"
    dataset: str = "phantom"  # phantom, nih:PATH or chestmnist:PATH
    architecture: str = "resnet50"
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    eval_batch_size: int = 128
    image_size: int = DEFAULT_IMAGE_SIZE
    learning_rate: float = DEFAULT_LEARNING_RATE
    seed: int = 0
    out: Path = Path("results")
    shuffle_labels: bool = False
    runtime: str = "local"
    precision: str = "fp32"
    deterministic: bool = True
    threads: int = 0
    patients: int | None = None
    split_fractions: tuple[float, float, float] = field(default=(0.7, 0.1, 0.2))
    # "random" (torchvision's scheme, drawn by the harness from the seed) or "imagenet=PATH".
    init: str = "random"
    # Framework-specific switches, "WORKER.KEY=VALUE" (e.g. "tensorflow.jit_compile=true").
    options: tuple[str, ...] = ()
    # 1: one train / validation / test split; K > 1: K patient-wise cross-validation folds.
    folds: int = 1
    # Done by the harness, the same bytes for every worker: "flip,rotate=20" (the reference study's) or "none".
    augment: str = "flip,rotate=20"
    skip_bad: bool = False  # nih: skip (and list) bad rows and files instead of stopping at the first
    # Training seeds (starting weights, batch order, augmentation), one run each; () means (seed,).
    # `seed` alone fixes the data, the test set and the folds, so every run scores the same images.
    seeds: tuple[int, ...] = ()
    # The harness's schedule (harness.schedule): ReduceLROnPlateau, checkpoint choice, early stopping.
    lr_factor: float = ScheduleSettings.factor
    lr_patience: int = ScheduleSettings.patience
    min_lr: float = ScheduleSettings.min_lr
    lr_threshold: float = ScheduleSettings.threshold
    early_stop: int = ScheduleSettings.early_stop
    bootstrap: int = 1000  # patient-level bootstrap resamples for confidence intervals and paired tests
    mlflow: str | None = None  # None: off; "": a local store in the results folder; else a tracking URI
    # --runtime remote: "NAME=HOST:PORT" per worker; TLS trust roots (PEM) and the bearer token's file.
    remote_workers: tuple[str, ...] = ()
    tls_ca: str | None = None
    token_file: str | None = None

    def __post_init__(self) -> None:
        def check(ok: bool, name: str, message: str) -> None:
            if not ok:
                raise ValueError(f"--{name.replace('_', '-')}: {message}")

        parse_dataset(self.dataset)  # ValueError naming --dataset
        Augmentation.parse(self.augment)  # ValueError naming --augment
        check(1 <= self.folds <= 20, "folds", f"{self.folds} must be within 1..20 (1: no cross-validation)")
        check(self.architecture in ARCHITECTURES, "arch", f"unknown {self.architecture!r} (known: {', '.join(ARCHITECTURES)})")
        check(self.precision in PRECISIONS, "precision", f"unknown {self.precision!r} (known: {', '.join(PRECISIONS)})")
        check(self.runtime in RUNTIMES, "runtime", f"unknown {self.runtime!r} (known: {', '.join(RUNTIMES)})")
        check(self.runtime == "remote" or not self.remote_workers, "worker", "addresses are for --runtime remote")
        check(self.runtime == "remote" or (self.tls_ca is None and self.token_file is None), "runtime",
              "--tls-ca and --token-file are for --runtime remote")
        check(self.runtime != "remote" or bool(self.remote_workers), "worker",
              "--runtime remote needs at least one --worker NAME=HOST:PORT")
        check(self.epochs >= 1, "epochs", f"{self.epochs} must be at least 1")
        check(self.batch_size >= 2, "batch_size", f"{self.batch_size} must be at least 2 (BatchNorm needs 2 images)")
        check(self.eval_batch_size >= 1, "eval_batch_size", f"{self.eval_batch_size} must be at least 1")
        require_image_size(self.image_size)
        check(math.isfinite(self.learning_rate) and self.learning_rate > 0, "lr", f"{self.learning_rate} must be > 0")
        check(self.seed >= 0, "seed", f"{self.seed} must be >= 0")
        check(self.threads >= 0, "threads", f"{self.threads} must be >= 0 (0: the framework's default)")
        check(self.patients is None or self.patients >= 10, "patients", f"{self.patients} must be at least 10")
        check(self.init == "random" or (self.init.startswith("imagenet=") and len(self.init) > len("imagenet=")),
              "init", f"{self.init!r} must be 'random' or 'imagenet=PATH' (a torchvision checkpoint file)")
        check(all(seed >= 0 for seed in self.seeds) and len(set(self.seeds)) == len(self.seeds), "seeds",
              f"{','.join(map(str, self.seeds))} must be distinct integers >= 0")
        check(len(self.training_seeds) * self.folds <= 100, "seeds",
              f"{len(self.training_seeds)} seeds x {self.folds} folds is more than 100 runs per worker")
        for option, message in self.schedule.problems():
            check(False, option, message)
        check(self.bootstrap == 0 or self.bootstrap >= 100, "bootstrap", f"{self.bootstrap} must be 0 (off) or at least 100")
        self.worker_options("")  # validates every --option

    @property
    def dataset_kind(self) -> str:
        """phantom, nih or chestmnist."""
        return parse_dataset(self.dataset)[0]

    @property
    def training_seeds(self) -> tuple[int, ...]:
        return self.seeds or (self.seed,)

    @property
    def schedule(self) -> ScheduleSettings:
        return ScheduleSettings(self.lr_factor, self.lr_patience, self.min_lr, self.lr_threshold, self.early_stop)

    @property
    def augmentation(self) -> Augmentation:
        return Augmentation.parse(self.augment)

    def worker_options(self, worker: str) -> dict[str, str]:
        """The --option switches addressed to `worker` ("keras", or "keras@3.14.0", which also takes
        those addressed to "keras"), as KEY -> VALUE; the more specific wins."""
        chosen: dict[str, str] = {}
        for target in dict.fromkeys([worker.partition("@")[0], worker]):
            for option in self.options:
                setting, equals, value = option.partition("=")
                if not (equals and "." in setting and setting.partition(".")[0] and setting.rpartition(".")[2]):
                    raise ValueError(f"--option: {option!r} must look like WORKER.KEY=VALUE, e.g. tensorflow.jit_compile=true")
                if target and setting.startswith(f"{target}.") and "@" not in setting[len(target) + 1:]:
                    chosen[setting[len(target) + 1:]] = value
        return chosen

    def check_option_targets(self, workers: list[str]) -> None:
        """ValueError when an --option names a worker that is not in the run (a typo would go unseen)."""
        targets = {name for worker in workers for name in (worker, worker.partition("@")[0])}
        for option in self.options:
            setting = option.partition("=")[0]
            if not any(setting.startswith(f"{target}.") for target in targets):
                name = setting.split(".")[0] if "@" not in setting else setting
                raise ValueError(f"--option: {option!r} is for worker '{name}', which is not in this run ({', '.join(workers)})")

    def to_dict(self) -> dict:
        """Plain JSON-ready values."""
        data = asdict(self)
        data["out"] = str(self.out)
        data["split_fractions"] = list(self.split_fractions)
        data["options"] = list(self.options)
        data["remote_workers"] = list(self.remote_workers)
        data["seeds"] = list(self.training_seeds)
        return data
