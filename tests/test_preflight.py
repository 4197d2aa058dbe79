"""Preflight (DESIGN invariant 9): workers are checked for equal conditions before any training."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.config import BenchmarkConfig, cache_root
from harness.preflight import Conditions, PreflightRefused, choose_device, differences, preflight
from harness.runtime.base import RunningWorker
from harness.runtime.environments import ensure_environment
from harness.runtime.local import LocalRuntime, LocalWorker
from harness.runtime.registry import WorkerSpec, discover_workers
from tests.conftest import SMALL_RUN, run_harness

H200 = "cuda:0 (NVIDIA H200)"
EPYC = "cpu (AMD EPYC)"


def test_device_kind_and_model_are_read_the_same_way_for_every_framework():
    assert Conditions("pytorch", "cuda:0 (NVIDIA H200)", 8, "fp32").kind == "cuda"
    assert Conditions("tensorflow", "gpu:0 (NVIDIA H200)", 8, "fp32").kind == "cuda"  # TF's name for it
    assert Conditions("keras", "cpu (AMD EPYC 7763)", 8, "fp32").kind == "cpu"
    assert Conditions("tensorflow", "gpu:0 (NVIDIA H200)", 8, "fp32").model == "NVIDIA H200"
    assert Conditions("x", "tpu", 1, "fp32").model == "tpu"


def test_equal_conditions_have_no_differences():
    same = [Conditions("pytorch", "cuda:0 (NVIDIA H200)", 16, "bf16-mixed"),
            Conditions("tensorflow", "gpu:0 (NVIDIA H200)", 16, "bf16-mixed")]
    assert differences(same, "cuda", "bf16-mixed") == []
    assert differences(same, None, "bf16-mixed") == []  # remote workers: whatever they share


def test_every_kind_of_difference_is_named_with_each_workers_value():
    found = differences([Conditions("pytorch", "cuda:0 (NVIDIA H200)", 16, "bf16-mixed"),
                         Conditions("keras", "cpu (AMD EPYC)", 2, "fp32")], "cuda", "bf16-mixed")
    text = "\n".join(found)
    assert "keras runs on cpu, but --device cuda was asked" in text
    assert "keras applied precision fp32, but --precision bf16-mixed was asked" in text
    assert "the device differs: pytorch cuda, keras cpu" in text
    assert "the device model differs: pytorch NVIDIA H200, keras AMD EPYC" in text
    assert "the thread count differs: pytorch 16, keras 2" in text
    assert "the precision differs: pytorch bf16-mixed, keras fp32" in text


def test_auto_is_the_cpu_on_a_host_without_cuda_and_what_remote_workers_report():
    assert choose_device("auto", "local").device == "cpu"  # this machine has no CUDA driver
    assert "no CUDA device" in choose_device("auto", "local").reason
    assert choose_device("auto", "remote").device is None
    assert choose_device("cuda", "local").device == "cuda"


class _NullsReportingDevices:
    """A local runtime whose null workers report the devices given per label (two real processes)."""

    name = "local"

    def __init__(self, devices: dict[str, str]) -> None:
        self.devices = devices
        self.asked_device: str | None = None

    def use_device(self, device: str | None) -> None:
        self.asked_device = device

    def prepare(self, specs: list[WorkerSpec]) -> None:
        pass

    @contextmanager
    def start(self, spec: WorkerSpec, log_path: Path) -> Iterator[RunningWorker]:
        environment = ensure_environment(spec.folder, cache_root())
        with LocalWorker(spec.folder, environment, log_path, label=spec.label,
                         extra_env={"CXRBENCH_NULL_DEVICE": self.devices[spec.label]}) as worker:
            yield RunningWorker(worker.start())

    def close(self) -> None:
        pass


def _two_nulls() -> list[WorkerSpec]:
    null = discover_workers()["null"]
    return [WorkerSpec(null), WorkerSpec(null, version="twin")]  # two labels, one folder


def test_two_workers_on_different_devices_are_refused_naming_each_device(tmp_path):
    runtime = _NullsReportingDevices({"null": EPYC, "null@twin": H200})
    with pytest.raises(PreflightRefused) as refused:
        preflight(runtime, _two_nulls(), BenchmarkConfig(workers="null", image_size=32).training, 14,
                  tmp_path, "cpu", "fp32", allow_unequal=False)
    message = str(refused.value)
    assert message.startswith("preflight: refusing the run before any training.")
    threads = len(os.sched_getaffinity(0))  # what the null worker reports, as a framework would
    assert f"null: device {EPYC}, {threads} threads, precision fp32" in message
    assert f"null@twin: device {H200}" in message
    assert "null@twin runs on cuda, but --device cpu was asked" in message
    assert "the device differs: null cpu, null@twin cuda" in message
    assert "--allow-unequal" in message
    assert runtime.asked_device == "cpu"


def test_allow_unequal_records_the_differences_instead(tmp_path):
    runtime = _NullsReportingDevices({"null": EPYC, "null@twin": H200})
    record = preflight(runtime, _two_nulls(), BenchmarkConfig(workers="null", image_size=32).training, 14,
                       tmp_path, "cpu", "fp32", allow_unequal=True)
    assert record["allowed_unequal"] is True
    assert "the device differs: null cpu, null@twin cuda" in record["unequal"]
    assert record["workers"]["null@twin"]["model"] == "NVIDIA H200"


def test_a_run_on_an_unexpected_device_exits_2_before_any_training(tmp_path):
    result = run_harness(["benchmark", "--workers", "null", *SMALL_RUN, "--out", str(tmp_path / "results")],
                         cwd=tmp_path, env={"CXRBENCH_NULL_DEVICE": H200})
    assert result.returncode == 2, result.stderr
    assert "preflight: refusing the run before any training." in result.stderr
    assert f"null: device {H200}" in result.stderr
    assert "null runs on cuda, but --device cpu was asked" in result.stderr  # auto: this host has no CUDA
    assert not (tmp_path / "results").exists()  # refused before a run directory was made


def test_allow_unequal_runs_and_the_report_opens_with_the_warning(tmp_path):
    result = run_harness(["benchmark", "--workers", "null", *SMALL_RUN, "--allow-unequal", "--out",
                          str(tmp_path / "results")], cwd=tmp_path, env={"CXRBENCH_NULL_DEVICE": H200})
    assert result.returncode == 0, result.stderr
    assert "warning: unequal conditions: null runs on cuda, but --device cpu was asked" in result.stderr
    run_dir = next((tmp_path / "results").iterdir())
    run = json.loads((run_dir / "run.json").read_text())
    assert run["preflight"]["allowed_unequal"] is True
    assert run["preflight"]["device_reason"] == "auto: no CUDA device on this host"
    report = (run_dir / "report.md").read_text()
    head = report.split("## Headline")[0]
    assert "**Warning: the workers ran under unequal conditions** (`--allow-unequal`)" in head
    assert "null runs on cuda, but --device cpu was asked" in head


def test_equal_conditions_are_stated_under_the_efficiency_table(cpu_null_run):
    result, run_dir = cpu_null_run
    assert "device: cpu (auto: no CUDA device on this host)" in result.stdout + result.stderr
    report = (run_dir / "report.md").read_text()
    assert "Warning" not in report
    assert ("Every worker ran on cpu (auto: no CUDA device on this host), with the same device model, threads and "
            "precision") in report
    assert "Timed runs used the frameworks' default, non-deterministic algorithms" in report


def test_a_setting_a_worker_cannot_honour_is_refused_even_with_allow_unequal(tmp_path):
    result = run_harness(["benchmark", "--workers", "null", *SMALL_RUN, "--option", "null.no_such_switch=1",
                          "--allow-unequal", "--out", str(tmp_path / "results")], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "null cannot run these settings: UNIMPLEMENTED: options.no_such_switch" in result.stderr


def test_the_cpu_device_hides_every_gpu_from_the_worker(tmp_path):
    runtime = LocalRuntime(cache_root())
    runtime.use_device("cpu")
    spec = WorkerSpec(discover_workers()["null"])
    runtime.prepare([spec])
    with runtime.start(spec, tmp_path / "null.log") as worker:
        pid = worker.client.metadata().pid
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert b"CUDA_VISIBLE_DEVICES=" in environ  # set, and empty


def test_auto_falls_back_to_the_cpu_for_all_when_a_worker_sees_no_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr("harness.preflight.cuda_device_count", lambda: 1)  # as on a GPU host
    runtime = _NullsReportingDevices({"null": EPYC, "null@twin": EPYC})
    record = preflight(runtime, _two_nulls(), BenchmarkConfig(workers="null", image_size=32).training, 14,
                       tmp_path, "auto", "fp32", allow_unequal=False)
    assert runtime.asked_device == "cpu"  # asked for cuda first, then the CPU for every worker
    assert record["device"] == "cpu"
    assert record["device_reason"] == "auto: null, null@twin see no CUDA device, so every worker runs on the CPU"
    assert record["unequal"] == []
