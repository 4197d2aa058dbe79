"""The servicer times train steps and predictions between two Backend.synchronize() calls, so
compute_seconds neither bills earlier queued work to a step nor misses the step's own (issue 15)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cxrbench.worker.v1 import worker_pb2
from cxrbench.worker.v1.tensors import make_batch
from cxrbench_worker.backend import Backend, BackendMetadata, ConfiguredModel, ModelSpec
from cxrbench_worker.servicer import WorkerServicer
from harness.config import BenchmarkConfig
from harness.training.settings import configure_request

SIZE = 32


class RecordingBackend(Backend):
    """Records the order of the servicer's calls; computes nothing."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.num_labels = 0

    def metadata(self) -> BackendMetadata:
        return BackendMetadata({}, "cpu", 1, {})

    def configure(self, spec: ModelSpec) -> ConfiguredModel:
        self.num_labels = spec.num_labels
        return ConfiguredModel(0, 0, {})

    def synchronize(self) -> None:
        self.calls.append("synchronize")

    def train_step(self, pixels: np.ndarray, labels: np.ndarray) -> float:
        self.calls.append("train_step")
        return 0.5

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        self.calls.append("predict")
        return np.zeros((pixels.shape[0], self.num_labels), np.float32)

    def set_learning_rate(self, learning_rate: float) -> None:
        pass

    def export_weights(self) -> dict[str, np.ndarray]:
        return {}

    def import_weights(self, tensors: dict[str, np.ndarray]) -> None:
        pass

    def export_native(self, directory: Path) -> str:
        return "nothing"


class Context:
    def abort(self, code, details):  # the servicer's error path: fail the test with the worker's words
        raise AssertionError(f"{code}: {details}")


def test_every_timed_call_sits_between_two_synchronizations():
    backend = RecordingBackend()
    servicer = WorkerServicer("recording", backend)
    servicer.Configure(configure_request(BenchmarkConfig(workers="null", image_size=SIZE).training(), 14), Context())
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, SIZE, SIZE), dtype=np.uint8)
    labels = np.zeros((2, 14), np.uint8)
    train = [worker_pb2.TrainRequest(batch=make_batch(i, pixels, labels)) for i in range(2)]
    replies = list(servicer.Train(iter(train), Context()))
    assert [reply.loss for reply in replies] == [0.5, 0.5]
    assert backend.calls == ["synchronize", "train_step", "synchronize"] * 2
    backend.calls.clear()
    (reply,) = servicer.Predict(iter([worker_pb2.PredictRequest(batch=make_batch(0, pixels))]), Context())
    assert backend.calls == ["synchronize", "predict", "synchronize"] and reply.compute_seconds >= 0
