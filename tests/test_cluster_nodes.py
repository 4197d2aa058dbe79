"""The comparison that refuses a Ray node whose data, code or environments are not the driver's, and
what each run reserves on the cluster (refused where runs could not be placed fairly)."""

from __future__ import annotations

import pytest

from harness.cluster.nodes import differences, mixed_gpu_models
from harness.cluster.reservation import reservation_per_run
from harness.cluster.settings import ClusterRefused, ClusterSettings

DRIVER = {"store_sha256": "a" * 64, "git": {"commit": "c1", "dirty": False}, "locks": {"pytorch": "l" * 64}}


def node(**changes) -> dict:
    return {**DRIVER, "host": "gpu7", "gpu_models": [], **changes}


def test_a_node_like_the_driver_passes():
    assert differences(DRIVER, node()) == []


def test_each_difference_is_named():
    assert differences(DRIVER, node(store_sha256="b" * 64)) == [
        f"its pixel store hashes to {'b' * 16}, the driver's to {'a' * 16}"]
    assert differences(DRIVER, node(store_sha256=None, store_error="/data/x: no meta.json")) == ["/data/x: no meta.json"]
    assert differences(DRIVER, node(git={"commit": "c2", "dirty": False})) == [
        "its checkout is at commit c2, the driver's at c1"]
    assert differences(DRIVER, node(git={"commit": "c1", "dirty": True, "changes_sha256": "d" * 64})) == [
        f"its checkout has uncommitted changes {'d' * 16}, the driver's no uncommitted changes"]
    assert differences(DRIVER, node(locks={"pytorch": "m" * 64})) == [
        f"pytorch's environment lock {'m' * 16} is not the driver's {'l' * 16} (another pin)"]


def test_mixed_gpu_models_are_named_with_their_nodes_and_one_model_is_not():
    facts = [node(host="a", gpu_models=["NVIDIA H200", "NVIDIA H200"]), node(host="b", gpu_models=["NVIDIA A100"]),
             node(host="c", gpu_models=["NVIDIA H200"])]
    assert mixed_gpu_models(facts) == ("the nodes have different GPU models (NVIDIA A100 on b; NVIDIA H200 on a, c); "
                                       "the model would be credited to the frameworks")
    assert mixed_gpu_models(facts[::2]) is None
    assert mixed_gpu_models([node(), node()]) is None  # declared GPUs only (no driver names them)


def two_nodes(gpus: float, cpus: float = 8.0) -> list[dict]:
    return [{"GPU": gpus, "CPU": cpus, "memory": 1e9}, {"GPU": gpus, "CPU": cpus}] if gpus else \
        [{"CPU": cpus}, {"CPU": cpus}]


def test_a_run_reserves_one_gpu_and_its_cpus_and_grouped_runs_need_a_node_that_holds_a_group():
    assert reservation_per_run(two_nodes(2), ClusterSettings(device="cuda"), 3) == {"GPU": 1.0, "CPU": 1.0}
    with pytest.raises(ClusterRefused, match=r"--placement grouped: the 3 workers of one seed and fold need 3 GPU, "
                                             r"3 CPU on one node, and no node has that"):
        reservation_per_run(two_nodes(2), ClusterSettings(placement="grouped", device="cuda"), 3)
    assert reservation_per_run(two_nodes(4), ClusterSettings(placement="grouped", device="cuda"), 3) == {
        "GPU": 1.0, "CPU": 1.0}


def test_exclusive_runs_reserve_a_whole_node_of_equal_nodes():
    assert reservation_per_run(two_nodes(8), ClusterSettings(placement="exclusive", device="cuda", cpus_per_run=4),
                               3) == {"GPU": 8.0, "CPU": 4.0}
    assert reservation_per_run(two_nodes(0, 16), ClusterSettings(placement="exclusive"), 3) == {"CPU": 16.0}
    with pytest.raises(ClusterRefused, match=r"different numbers of GPUs \(\[8, 4\]\)"):
        reservation_per_run([{"GPU": 8, "CPU": 8}, {"GPU": 4, "CPU": 8}], ClusterSettings(placement="exclusive"), 3)


@pytest.mark.parametrize("nodes, device, why", [(two_nodes(0), "cpu", "the cluster has no GPUs"),
                                                (two_nodes(2), "cpu", r"the workers compute on the CPU \(--device cpu\)")])
def test_workers_computing_on_the_cpu_must_fit_their_threads_in_what_a_run_reserves(nodes, device, why):
    with pytest.raises(ClusterRefused, match=rf"ray: {why}, so each run computes on the --cpus-per-run 2 CPU\(s\) it "
                                             r"reserves: give --threads N with N at most 2 \(now the framework default: "
                                             r"every core\), or --placement exclusive"):
        reservation_per_run(nodes, ClusterSettings(device=device, cpus_per_run=2), 1)
    with pytest.raises(ClusterRefused, match=r"\(now 4\)"):
        reservation_per_run(nodes, ClusterSettings(device=device, cpus_per_run=2, threads=4), 1)
    assert reservation_per_run(nodes, ClusterSettings(device=device, cpus_per_run=2, threads=2), 1)["CPU"] == 2.0
