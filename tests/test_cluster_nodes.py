"""The comparison that refuses a Ray node whose data, code or environments are not the driver's."""

from __future__ import annotations

from harness.cluster.nodes import differences, mixed_gpu_models

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
