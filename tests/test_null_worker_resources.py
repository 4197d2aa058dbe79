"""GetResourceUsage and ExportNative on the null worker, which the conformance suite does not list.

The process-memory half and the export's measuring and clean-up live in the worker SDK, so these
also check that shared code without a framework; the conformance suite checks each framework.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from cxrbench_worker.neutral_weights import weights_to_bytes
from harness.runtime.client import WorkerError
from harness.config import BenchmarkConfig, cache_root
from harness.runtime.registry import discover_workers
from harness.runtime.environments import ensure_environment
from harness.runtime.local import LocalWorker
from harness.training.settings import configure_request

MIB = 2**20
# One 64 MiB tensor: big enough that its upload shows in the resident set, whatever malloc keeps.
BIG_WEIGHTS = weights_to_bytes({"fc.weight": np.ones((16, MIB), dtype=np.float32)})


@pytest.fixture
def null_process(tmp_path):
    """A null worker, not yet configured, whose $TMPDIR is tmp_path/tmp."""
    folder = discover_workers()["null"]
    (tmp_path / "tmp").mkdir()
    worker = LocalWorker(folder, ensure_environment(folder, cache_root()), tmp_path / "null.log", {"TMPDIR": str(tmp_path / "tmp")})
    try:
        worker.start()
        yield worker, tmp_path / "tmp"
    finally:
        worker.stop()


def configure(client) -> None:
    client.configure(configure_request(BenchmarkConfig(workers="null", image_size=32).training(), num_labels=14))


def test_null_worker_reports_process_memory_and_no_device(null_process):
    worker, _ = null_process
    usage = worker.client.resource_usage()
    assert set(usage) == {"peak_rss_bytes", "rss_bytes", "rss_source", "peak_reset", "device_memory_reported",
                          "device_peak_bytes", "device_bytes", "device_total_bytes", "device", "energy_reported",
                          "device_energy_joules"}
    assert usage["peak_rss_bytes"] >= usage["rss_bytes"] > 10 * MIB  # a Python with numpy and gRPC
    assert usage["rss_source"] == ("/proc/self/status" if sys.platform == "linux" else "getrusage")
    assert (usage["device_memory_reported"], usage["device"], usage["device_peak_bytes"]) == (False, "cpu", 0)
    assert (usage["energy_reported"], usage["device_energy_joules"]) == (False, 0.0)


@pytest.mark.skipif(sys.platform != "linux", reason="the peak can only be reset through Linux's /proc")
def test_a_64_mib_upload_raises_the_peak_and_a_reset_forgets_it(null_process):
    client = null_process[0].client
    configure(client)
    client.resource_usage(reset_peak=True)
    quiet = client.resource_usage()
    client.set_weights(BIG_WEIGHTS)
    loaded = client.resource_usage(reset_peak=True)
    after = client.resource_usage()
    assert loaded["peak_rss_bytes"] - quiet["peak_rss_bytes"] >= 64 * MIB
    assert loaded["peak_reset"] and not after["peak_reset"]
    # The null worker keeps the 64 MiB tensor but frees the joined upload: the reset peak is lower.
    assert after["rss_bytes"] <= after["peak_rss_bytes"] < loaded["peak_rss_bytes"]


def test_native_export_is_an_npz_of_the_neutral_size_and_leaves_no_file(null_process):
    worker, temp = null_process
    configure(worker.client)
    worker.client.set_weights(BIG_WEIGHTS)
    export = worker.client.export_native()
    assert export["format"].startswith("numpy .npz") and export["files"] == 1
    # .npz: a zip of one .npy (a 128-byte header) per tensor, stored uncompressed.
    assert abs(export["size_bytes"] - len(BIG_WEIGHTS)) < 1024, export
    assert list(temp.iterdir()) == []


def test_native_export_before_configure_is_failed_precondition(null_process):
    with pytest.raises(WorkerError) as error:
        null_process[0].client.export_native()
    assert (error.value.rpc, error.value.code) == ("ExportNative", "FAILED_PRECONDITION")
    assert "call Configure first" in error.value.details
