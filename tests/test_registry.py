"""`--workers` selections: all, lists, version pins, and clear errors."""

from __future__ import annotations

import pytest

from harness.registry import discover_workers, pinned_version, resolve_workers


def test_all_means_every_listed_worker_and_not_the_null_worker():
    names = [folder.name for folder in resolve_workers("all")]
    assert "pytorch" in names and "null" not in names


def test_a_list_keeps_its_order_and_the_null_worker_can_be_named():
    assert [f.name for f in resolve_workers("null,pytorch")] == ["null", "pytorch"]


def test_version_suffix_must_match_the_pin():
    assert pinned_version(discover_workers()["pytorch"]) == "2.14.1"
    assert [f.name for f in resolve_workers("pytorch@2.14.1")] == ["pytorch"]
    with pytest.raises(ValueError, match=r"pytorch@2.13.0 asks for version 2.13.0, but .* pins torch==2.14.1"):
        resolve_workers("pytorch@2.13.0")


def test_naming_a_worker_twice_is_an_error():
    with pytest.raises(ValueError, match="named twice"):
        resolve_workers("pytorch,pytorch")
