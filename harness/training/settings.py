"""What training needs to know, and the Configure request every worker gets from it.

The training loop and the parity probe take a `TrainingSettings`, not the command's whole config:
the network, the numerics, the batch sizes, the augmentation and the schedule; the same for every
worker but for its own framework switches (`options`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cxrbench.worker.v1 import worker_pb2
from harness.data.augmentation import Augmentation
from harness.training.schedule import ScheduleSettings

PRECISIONS = ("fp32", "bf16-mixed", "fp16-mixed")
# Every worker normalises grayscale pixels expanded to 3 channels with ImageNet's statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TrainingSettings:
    """How every worker is built and trained in a run."""

    architecture: str
    image_size: int
    learning_rate: float
    seed: int  # the data seed: Configure's seed where a run names none (the parity probe)
    epochs: int
    batch_size: int
    eval_batch_size: int
    augmentation: Augmentation
    schedule: ScheduleSettings
    precision: str = "fp32"
    deterministic: bool = True
    threads: int = 0  # intra-op threads per worker; 0: the framework's default
    data_threads: int = 1  # the harness's batch-building threads (the bytes do not depend on it)
    options: Mapping[str, str] = field(default_factory=dict)  # this worker's --option switches
    localize: bool = False  # save the class activation maps of the boxed test and validation images


def configure_request(
    settings: TrainingSettings, num_labels: int, seed: int | None = None
) -> worker_pb2.ConfigureRequest:
    """The Configure request for a run; `seed` is the run's training seed (default: the data seed)."""
    return worker_pb2.ConfigureRequest(
        architecture=settings.architecture,
        num_labels=num_labels,
        image_size=settings.image_size,
        seed=settings.seed if seed is None else seed,
        optimizer=worker_pb2.AdamOptimizer(
            learning_rate=settings.learning_rate, beta1=0.9, beta2=0.999, epsilon=1e-8, weight_decay=0.0
        ),
        numerics=worker_pb2.Numerics(
            precision=settings.precision, allow_tf32=False, deterministic=settings.deterministic
        ),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        threads=settings.threads,
        options=dict(settings.options),
    )
