"""GPU energy: the worker's NVML reader (ctypes, never raising), the Backend hook, and the harness's
joules per epoch and per image, end to end with the null worker's fake counter; n/a on CPU."""

from __future__ import annotations

import ctypes
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import REPO_ROOT, SMALL_RUN, run_harness
from cxrbench_worker import energy
from cxrbench_worker.backend import Backend, DeviceMemory
from harness.evaluation.run_summary import efficiency
from harness.report.sections import efficiency_table
from harness.training.loop import run_energy


def _nvml_loadable() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


@pytest.mark.skipif(_nvml_loadable(), reason="this machine has NVML; the reading may be a number")
def test_without_nvml_the_reading_is_none():
    assert energy.gpu_energy_joules() is None
    assert energy.gpu_energy_joules("GPU-00000000-0000-0000-0000-000000000000") is None


class FakeNvml:
    """libnvidia-ml's five functions as ctypes calls them; records which handle was asked for."""

    def __init__(self, energy_status: int = 0, millijoules: int = 123_456) -> None:
        self.energy_status, self.millijoules = energy_status, millijoules
        self.asked: list = []
        self.open = 0

    def nvmlInit_v2(self):
        self.open += 1
        return 0

    def nvmlShutdown(self):
        self.open -= 1
        return 0

    def nvmlDeviceGetHandleByIndex_v2(self, index, handle):
        self.asked.append(("index", index.value))
        handle._obj.value = 1
        return 0

    def nvmlDeviceGetHandleByUUID(self, uuid, handle):
        self.asked.append(("uuid", uuid.decode()))
        handle._obj.value = 1
        return 0

    def nvmlDeviceGetTotalEnergyConsumption(self, handle, millijoules):
        millijoules._obj.value = self.millijoules
        return self.energy_status


@pytest.fixture
def fake_nvml(monkeypatch):
    """NVML faked, the CUDA driver absent (as here), so the device comes from the environment."""
    nvml = FakeNvml()
    monkeypatch.setattr(energy.ctypes, "CDLL", lambda name: nvml if name == "libnvidia-ml.so.1" else _absent(name))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return nvml


def _absent(name: str):
    raise OSError(f"{name}: cannot open shared object file")


def test_the_counter_is_read_in_joules_and_nvml_shut_down_again(fake_nvml):
    assert energy.gpu_energy_joules() == pytest.approx(123.456)
    assert fake_nvml.asked == [("index", 0)] and fake_nvml.open == 0


@pytest.mark.parametrize(("uuid", "visible", "asked"), [
    ("1a2b3c4d-0000-1111-2222-333344445555", "", ("uuid", "GPU-1a2b3c4d-0000-1111-2222-333344445555")),
    ("GPU-1a2b", "3", ("uuid", "GPU-1a2b")),  # the backend's own device wins
    (None, "GPU-9f8e,GPU-0000", ("uuid", "GPU-9f8e")),
    (None, "2,3", ("index", 2)),
    (None, "", ("index", 0)),
])
def test_the_device_is_the_backends_uuid_else_the_first_visible_one(fake_nvml, monkeypatch, uuid, visible, asked):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    energy.gpu_energy_joules(uuid)
    assert fake_nvml.asked == [asked]


def test_the_cuda_drivers_uuid_names_the_device_when_there_is_one(fake_nvml, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    monkeypatch.setattr(energy, "cuda_device_uuid", lambda ordinal=0: "GPU-from-the-driver")
    energy.gpu_energy_joules()
    assert fake_nvml.asked == [("uuid", "GPU-from-the-driver")]


def test_a_counter_the_gpu_does_not_support_is_none_not_an_error(fake_nvml):
    fake_nvml.energy_status = 3  # NVML_ERROR_NOT_SUPPORTED: before Volta, a MIG slice
    assert energy.gpu_energy_joules() is None and fake_nvml.open == 0


def test_a_driver_without_the_function_is_none_not_an_error(fake_nvml):
    del FakeNvml.nvmlDeviceGetTotalEnergyConsumption  # restored below: the class is this module's
    try:
        assert energy.gpu_energy_joules() is None and fake_nvml.open == 0
    finally:
        FakeNvml.nvmlDeviceGetTotalEnergyConsumption = _energy_function


_energy_function = FakeNvml.nvmlDeviceGetTotalEnergyConsumption


def test_the_backend_reads_nvml_only_for_a_gpu_it_names(monkeypatch):
    monkeypatch.setattr("cxrbench_worker.backend.gpu_energy_joules", lambda: 42.0)
    on = lambda device: SimpleNamespace(device_memory=lambda reset_peak: DeviceMemory(device=device))  # noqa: E731
    assert Backend.energy_joules(on("cuda:0 (NVIDIA H200)")) == 42.0
    assert Backend.energy_joules(on("gpu:0 (NVIDIA H200)")) == 42.0
    assert Backend.energy_joules(on("cpu")) is None


def test_a_run_has_energy_only_when_every_epoch_was_measured():
    assert run_energy([10.0, 14.0], 48) == {"joules_per_epoch": [10.0, 14.0], "joules_per_image": 0.5}
    assert run_energy([10.0, None], 48) is None
    assert run_energy([], 0) is None


def _run(joules: dict | None) -> dict:
    return {"timings": {"epoch_seconds": [1.0], "train_images_per_second": [1.0], "compute_images_per_second": [1.0],
                        "prediction_images_per_second": [1.0], "first_step_seconds": 0.1},
            "memory": {"peak_rss_bytes": 1}, "energy": joules}


def test_the_summary_pools_energy_and_the_table_says_n_a_on_cpu():
    gpu = efficiency([_run({"joules_per_epoch": [10.0, 12.0], "joules_per_image": 0.25}),
                      _run({"joules_per_epoch": [14.0], "joules_per_image": 0.35})])
    assert gpu["joules_per_epoch"] == {"median": 12.0, "min": 10.0, "max": 14.0, "n": 3}
    assert gpu["joules_per_image"]["median"] == pytest.approx(0.3)
    cpu = efficiency([_run(None)])
    assert cpu["joules_per_epoch"] is None and cpu["joules_per_image"] is None
    result = lambda summary: {"efficiency": summary, "parameters": {"trainable": 1, "non_trainable": 0},  # noqa: E731
                              "model_size_bytes": {"neutral_safetensors": 1}}
    lines = efficiency_table({"gpu": result(gpu), "cpu": result(cpu)})
    assert "J/epoch | J/img |" in lines[0]
    assert lines[2].endswith("| 12.0 (10.0–14.0) | 0.300 (0.250–0.350) |")
    assert lines[3].endswith("| n/a | n/a |")


def _benchmark(tmp_path, env: dict[str, str]) -> tuple[dict, dict[str, str]]:
    """A two-epoch null run: its metrics.json entry and its efficiency table row, by column."""
    out = tmp_path / "results"
    result = run_harness(["benchmark", "--workers", "null", "--epochs", "2", "--out", str(out), *SMALL_RUN],
                         REPO_ROOT, env)
    assert result.returncode == 0, result.stderr
    return _entry_and_row(next(out.iterdir()))


def _entry_and_row(run: Path) -> tuple[dict, dict[str, str]]:
    lines = (run / "report.md").read_text().splitlines()
    header = next(index for index, line in enumerate(lines) if "| J/epoch | J/img |" in line)
    cells = lambda line: [cell.strip() for cell in line.strip().strip("|").split("|")]  # noqa: E731
    row = dict(zip(cells(lines[header]), cells(lines[header + 2]), strict=True))
    return json.loads((run / "metrics.json").read_text())["workers"]["null"], row


def test_a_worker_with_an_energy_counter_gets_joules_per_epoch_and_image(tmp_path):
    metrics, row = _benchmark(tmp_path, {"CXRBENCH_NULL_ENERGY_JOULES_PER_STEP": "2.5"})
    (run,) = metrics["runs"]
    per_epoch = run["energy"]["joules_per_epoch"]
    # Every epoch trains the same number of full batches; 2.5 J per step of 8 images (SMALL_RUN).
    assert len(per_epoch) == 2 and per_epoch[0] == per_epoch[1] > 0 and per_epoch[0] % 2.5 == 0
    assert run["energy"]["joules_per_image"] == pytest.approx(2.5 / 8)
    assert metrics["efficiency"]["joules_per_epoch"]["median"] == per_epoch[0]
    joules = f"{per_epoch[0]:.1f}"  # the median of the two epochs, then their range, as the other columns
    assert (row["worker"], row["J/epoch"], row["J/img"]) == ("null", f"{joules} ({joules}–{joules})", "0.312")


def test_a_cpu_worker_reports_no_energy_and_the_report_says_n_a(cpu_null_run):
    metrics, row = _entry_and_row(cpu_null_run[1])
    assert metrics["runs"][0]["energy"] is None
    assert metrics["efficiency"]["joules_per_epoch"] is None and metrics["efficiency"]["joules_per_image"] is None
    assert (row["worker"], row["J/epoch"], row["J/img"]) == ("null", "n/a", "n/a")
