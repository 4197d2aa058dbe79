"""Training decisions, made by the harness alone from the validation loss it computes from logits.

Every worker gets the same three decisions from the same numbers: the learning rate
(ReduceLROnPlateau), the checkpoint kept for the test evaluation (the lowest validation loss) and
when to stop early. The decision functions take only validation losses, so identical losses give
identical decisions for every framework; nothing here knows which worker it serves.

ReduceLROnPlateau follows torch.optim.lr_scheduler.ReduceLROnPlateau (mode "min", relative
threshold): an epoch improves when its loss is below best * (1 - threshold); the rate is multiplied
by `factor` once more than `patience` epochs in a row have not improved, never below `min_lr`.
(Keras's callback reduces one epoch earlier for the same patience; we name torch's rule and use it
for everybody.)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

# The reference study's schedule (ReduceLROnPlateau on validation loss, factor 0.1) with a patience
# sized for 5 epochs. At the CPU default of 2 neither the reduction (two epochs in a row without a new
# best) nor early stopping can act: the one decision left is which epoch's weights are tested.
DEFAULT_FACTOR = 0.1
DEFAULT_PATIENCE = 1
DEFAULT_MIN_LR = 1e-6
DEFAULT_THRESHOLD = 1e-4
DEFAULT_EARLY_STOP = 3


@dataclass(frozen=True)
class ScheduleSettings:
    """How the harness reacts to validation loss. `early_stop` 0 turns early stopping off.

    The ranges are checked where the options are declared (harness/config.py).
    """

    factor: float = DEFAULT_FACTOR
    patience: int = DEFAULT_PATIENCE
    min_lr: float = DEFAULT_MIN_LR
    threshold: float = DEFAULT_THRESHOLD
    early_stop: int = DEFAULT_EARLY_STOP

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EpochDecision:
    """What the harness does after one epoch's validation."""

    epoch: int
    validation_loss: float
    learning_rate: float  # the rate this epoch trained with
    next_learning_rate: float  # the rate of the next epoch (lower after a plateau)
    checkpoint: bool  # this epoch's weights are the best so far: keep them
    stop: bool  # no further epoch

    @property
    def lr_changed(self) -> bool:
        return self.next_learning_rate != self.learning_rate


class TrainingSchedule:
    """The decisions of one training run, fed one validation loss per epoch.

    A non-finite loss never improves anything (a diverged run keeps its last good checkpoint).
    """

    def __init__(self, settings: ScheduleSettings, learning_rate: float, epochs: int) -> None:
        self.settings = settings
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.decisions: list[EpochDecision] = []
        self._plateau_best = math.inf
        self._plateau_bad = 0
        self._best = math.inf
        self._best_epoch: int | None = None
        self._since_best = 0

    @property
    def best_epoch(self) -> int | None:
        """The epoch whose weights are kept (lowest validation loss); None before any finite loss."""
        return self._best_epoch

    @property
    def best_validation_loss(self) -> float:
        return self._best

    def after_epoch(self, epoch: int, validation_loss: float) -> EpochDecision:
        """Record `epoch`'s validation loss and decide the checkpoint, the next rate and stopping."""
        settings = self.settings
        finite = math.isfinite(validation_loss)
        checkpoint = finite and validation_loss < self._best
        if checkpoint:
            self._best, self._best_epoch, self._since_best = validation_loss, epoch, 0
        else:
            self._since_best += 1

        if finite and validation_loss < self._plateau_best * (1 - settings.threshold):
            self._plateau_best, self._plateau_bad = validation_loss, 0
        else:
            self._plateau_bad += 1
        current = self.learning_rate
        if self._plateau_bad > settings.patience:
            reduced = max(current * settings.factor, settings.min_lr)
            if current - reduced > 1e-12 * current:  # already at the floor: nothing to change
                self.learning_rate = reduced
            self._plateau_bad = 0

        stop = epoch >= self.epochs or (settings.early_stop > 0 and self._since_best >= settings.early_stop)
        decision = EpochDecision(epoch, validation_loss, current, self.learning_rate, checkpoint, stop)
        self.decisions.append(decision)
        return decision

    def summary(self) -> dict:
        """Plain values for metrics.json: the chosen epoch, where training ended and every rate change."""
        last = self.decisions[-1] if self.decisions else None
        return {
            "best_epoch": self._best_epoch,
            "best_validation_loss": self._best if math.isfinite(self._best) else None,
            "epochs_trained": last.epoch if last else 0,
            "stopped_early": bool(last and last.stop and last.epoch < self.epochs),
            "lr_changes": [{"epoch": d.epoch, "from": d.learning_rate, "to": d.next_learning_rate}
                           for d in self.decisions if d.lr_changed],
        }
