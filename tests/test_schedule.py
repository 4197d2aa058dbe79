"""The harness's training decisions: ReduceLROnPlateau, checkpoint choice and early stopping.

The unit tests pin the rules; the fake-worker tests drive the real training loop
(harness.training.loop.train_and_evaluate) with in-process workers whose validation losses are scripted,
and prove that equal losses give equal decisions whichever worker produced them.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest

from cxrbench.worker.v1.tensors import decode_tensor
from harness.runtime.client import StepResult
from harness.config import BenchmarkConfig
from harness.data.pixel_store import PixelStore
from harness.report.sections import schedule_lines
from harness.records.run_directory import RunDirectory
from harness.training.schedule import ScheduleSettings, TrainingSchedule
from harness.data.splits import Split
from harness.training.loop import TrainingData, TrainingRun, train_and_evaluate

LABELS = 3


def decide(losses: list[float], epochs: int | None = None, **settings) -> TrainingSchedule:
    schedule = TrainingSchedule(ScheduleSettings(**settings), 1e-3, epochs or len(losses))
    for epoch, loss in enumerate(losses, start=1):
        if schedule.after_epoch(epoch, loss).stop:
            break
    return schedule


def test_rate_drops_once_more_than_patience_epochs_fail_to_improve():
    schedule = decide([1.0, 0.9, 0.95, 0.96, 0.8, 0.85, 0.86], early_stop=0)
    assert [(d.epoch, d.learning_rate, d.next_learning_rate) for d in schedule.decisions if d.lr_changed] == [
        (4, 1e-3, pytest.approx(1e-4)), (7, pytest.approx(1e-4), pytest.approx(1e-5))]
    assert schedule.best_epoch == 5


def test_patience_counts_like_torch_and_resets_after_a_reduction():
    # patience 2: the third epoch in a row without improvement reduces; the count starts again after.
    schedule = decide([1.0] + [1.0] * 6, patience=2, early_stop=0)
    assert [d.epoch for d in schedule.decisions if d.lr_changed] == [4, 7]


def test_an_improvement_smaller_than_the_relative_threshold_is_a_plateau():
    schedule = decide([1.0, 0.99995, 0.99990], threshold=1e-4, early_stop=0)
    assert [d.epoch for d in schedule.decisions if d.lr_changed] == [3]
    assert schedule.best_epoch == 3  # the checkpoint still follows the lowest loss


def test_rate_never_goes_below_the_minimum():
    schedule = decide([1.0] * 12, min_lr=2e-5, early_stop=0)
    rates = [d.next_learning_rate for d in schedule.decisions]
    assert min(rates) == 2e-5 and rates[-1] == 2e-5
    assert [d.epoch for d in schedule.decisions if d.lr_changed] == [3, 5]  # 1e-3 -> 1e-4 -> 2e-5 (not 1e-5)


def test_early_stop_after_epochs_without_a_new_best_and_checkpoint_is_the_best():
    schedule = decide([0.7, 0.5, 0.6, 0.55, 0.52, 0.4], epochs=10, early_stop=3)
    assert schedule.decisions[-1].epoch == 5 and schedule.decisions[-1].stop
    assert schedule.summary()["stopped_early"] and schedule.best_epoch == 2
    assert decide([0.7, 0.5, 0.6], epochs=3).summary()["stopped_early"] is False  # the last epoch is no early stop


def test_a_diverged_loss_never_becomes_the_checkpoint():
    schedule = decide([0.7, math.nan, math.inf, 0.6], early_stop=0)
    assert [d.checkpoint for d in schedule.decisions] == [True, False, False, True]
    assert schedule.best_epoch == 4


@pytest.mark.parametrize(("field", "value", "flag"), [
    ("lr_factor", 1.0, "--lr-factor"), ("lr_factor", 0, "--lr-factor"), ("lr_patience", -1, "--lr-patience"),
    ("min_lr", -1, "--min-lr"), ("lr_threshold", 1, "--lr-threshold"), ("early_stop", -1, "--early-stop")])
def test_settings_out_of_range_are_named(field: str, value: float, flag: str):
    with pytest.raises(ValueError, match=f"^{flag}: "):
        BenchmarkConfig(**{field: value})


def softplus_inverse(loss: float) -> float:
    """The margin s for which BCE(s * (2y - 1), y) = log(1 + exp(-s)) equals `loss`, for y 0 or 1."""
    return -math.log(math.expm1(loss))


class ScriptedWorker:
    """An in-process stand-in for a worker client whose validation loss follows a script.

    The labels are written into each image's first row, so the worker can answer logits
    s * (2y - 1), whose BCE is log(1 + exp(-s)) whatever the labels: the script sets s per epoch.
    Its "weights" are s itself, so restoring a checkpoint restores that epoch's predictions.
    """

    def __init__(self, name: str, losses: list[float]) -> None:
        self.name = name
        self.margins = [softplus_inverse(loss) for loss in losses]
        self.epoch = 0
        self.margin = 0.0
        self.rates: list[float] = []
        self.restored: list[float] = []

    def train(self, batches):
        self.epoch += 1
        self.margin = self.margins[self.epoch - 1]
        for batch in batches:
            yield StepResult(batch.index, 0.5, 0.001, batch.digest)

    def predict(self, batches):
        logits = []
        for batch in batches:
            truth = decode_tensor(batch.pixels, "pixels")[:, 0, :LABELS] > 0
            logits.append(np.where(truth, self.margin, -self.margin).astype(np.float32))
        return np.concatenate(logits), 0.001

    def set_learning_rate(self, rate: float) -> float:
        self.rates.append(rate)
        return rate

    def get_weights(self) -> bytes:
        return struct.pack("<d", self.margin)

    def set_weights(self, data: bytes) -> int:
        self.margin = struct.unpack("<d", data)[0]
        self.restored.append(self.margin)
        return 1

    def resource_usage(self, reset_peak: bool = False) -> dict:
        return {"peak_rss_bytes": 1, "device_memory_reported": False, "device_peak_bytes": None}

    def export_native(self) -> dict:
        return {"format": "scripted", "size_bytes": 8, "files": 1}


class Configured:
    trainable_parameters, non_trainable_parameters, numerics = 1, 0, {}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> TrainingData:
    rng = np.random.default_rng(0)
    images = 60
    labels = (rng.random((images, LABELS)) < 0.4).astype(np.uint8)
    labels[:2] = [[1, 1, 1], [0, 0, 0]]  # every label has both classes in every part
    labels[20:22] = labels[:2]
    labels[40:42] = labels[:2]
    pixels = np.zeros((images, 32, 32), np.uint8)
    pixels[:, 0, :LABELS] = labels * 255
    store = PixelStore(tmp_path_factory.mktemp("store"), pixels, labels, np.arange(images), tuple(map(str, range(images))),
                       ("A", "B", "C"), np.zeros((0, 6), np.int32), {}, "0" * 64, np.zeros(images, np.uint8))
    split = Split(np.arange(0, 20), np.arange(20, 40), np.arange(40, 60))
    return TrainingData(store=store, split=split, fit_labels=labels)


SCRIPT = [0.6, 0.5, 0.55, 0.56, 0.4, 0.45, 0.46, 0.47, 0.3, 0.2]
OTHER = [0.6, 0.5, 0.45, 0.44, 0.43, 0.42, 0.41, 0.40, 0.39, 0.38]


def train(worker: ScriptedWorker, data: TrainingData, out: Path) -> tuple[dict, list[dict]]:
    config = BenchmarkConfig(workers=worker.name, epochs=10, batch_size=4, eval_batch_size=7, image_size=32,
                             augment="none", learning_rate=1e-3, lr_factor=0.1, lr_patience=1, early_stop=3)
    run_dir = RunDirectory.create(out, worker.name)
    result = train_and_evaluate(worker, config.training(worker.name), data, run_dir, Configured(), TrainingRun(0, None, ""), measure_native=True)
    return result, run_dir.read_epochs()


def test_equal_validation_losses_give_every_worker_the_same_decisions(data, tmp_path):
    workers = [ScriptedWorker("pytorch", SCRIPT), ScriptedWorker("tensorflow", SCRIPT), ScriptedWorker("keras", OTHER)]
    outcomes = [train(worker, data, tmp_path) for worker in workers]
    decisions = [[(r["epoch"], r["learning_rate"], r["next_learning_rate"], r["checkpoint"], r["stopped_early"])
                  for r in epochs] for _, epochs in outcomes]
    (first, _), (second, _), (third, _) = outcomes

    # The same losses: the same rate changes, the same kept epoch, the same early stop.
    assert decisions[0] == decisions[1]
    assert first["schedule"] == second["schedule"]
    assert workers[0].rates == workers[1].rates == pytest.approx([1e-4, 1e-5])
    assert first["schedule"]["lr_changes"] == [{"epoch": 4, "from": 1e-3, "to": pytest.approx(1e-4)},
                                               {"epoch": 7, "from": pytest.approx(1e-4), "to": pytest.approx(1e-5)}]
    assert first["schedule"]["best_epoch"] == 5 and first["schedule"]["epochs_trained"] == 8
    assert first["schedule"]["stopped_early"] is True
    # The kept checkpoint (epoch 5) is restored before the test set is predicted: its loss is the test loss.
    assert workers[0].restored == [pytest.approx(softplus_inverse(0.4))]
    assert first["test"]["loss"] == pytest.approx(0.4, abs=1e-6)

    # Other losses, other decisions: nothing is decided per framework.
    assert decisions[2] != decisions[0]
    assert third["schedule"]["lr_changes"] == [] and third["schedule"]["best_epoch"] == 10
    assert workers[2].restored == []  # the last epoch is the best: nothing to restore
    assert third["test"]["loss"] == pytest.approx(0.38, abs=1e-6)


def test_every_epoch_row_records_rate_loss_auroc_and_time(data, tmp_path):
    result, epochs = train(ScriptedWorker("pytorch", SCRIPT), data, tmp_path)
    assert [float(r["validation_loss"]) for r in epochs] == pytest.approx(SCRIPT[:8], abs=1e-6)
    assert [float(r["learning_rate"]) for r in epochs] == pytest.approx([1e-3] * 4 + [1e-4] * 3 + [1e-5])
    assert all(float(r["validation_macro_auroc"]) == 1.0 and float(r["seconds"]) > 0 for r in epochs)
    per_run = list((tmp_path).glob("*/epochs/pytorch/run.csv"))
    assert len(per_run) == 1 and len(per_run[0].read_text().splitlines()) == 9  # header + 8 epochs
    assert result["model_size_bytes"] == {"neutral_safetensors": 8, "native": {"format": "scripted", "size_bytes": 8, "files": 1}}


def test_the_report_lists_every_learning_rate_change_with_its_epoch(data, tmp_path):
    result, _ = train(ScriptedWorker("pytorch", SCRIPT), data, tmp_path)
    config = BenchmarkConfig(lr_factor=0.1, lr_patience=1, early_stop=3).to_dict()
    text = "\n".join(schedule_lines(config, {"pytorch": {"runs": [result]}}))
    assert "after epoch 4: 0.001 → 0.0001; after epoch 7: 0.0001 → 1e-05" in text
    assert "| pytorch | seed 0 | 8 | 5 (0.4000) | yes |" in text
