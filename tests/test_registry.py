"""`--workers` selections: all, lists, framework versions side by side, and clear errors."""

from __future__ import annotations

import pytest

from cxrbench_worker.requirements import requirements_text
from harness.runtime.registry import discover_workers, pinned_version, resolve_workers
from harness.runtime.environments import environment_path


def test_all_means_every_listed_worker_and_not_the_null_worker():
    names = [folder.name for folder in resolve_workers("all")]
    assert "pytorch" in names and "null" not in names


def test_a_list_keeps_its_order_and_the_null_worker_can_be_named():
    assert [f.name for f in resolve_workers("null,pytorch")] == ["null", "pytorch"]


def test_two_versions_of_one_worker_are_two_workers_with_their_own_requirements_and_environments(tmp_path):
    older, newer = resolve_workers("keras@3.14.0,keras@3.15.1")
    assert (older.label, newer.label) == ("keras@3.14.0", "keras@3.15.1")
    assert (older.name, older.framework_version, newer.framework_version) == ("keras", "3.14.0", "3.15.1")
    pinned = discover_workers()["keras"].requirements.read_text().splitlines()
    changed = [(a, b) for a, b in zip(pinned, older.requirements().splitlines()) if a != b]
    assert changed == [("keras==3.15.1", "keras==3.14.0")]  # only the framework's own pin moves
    assert newer.requirements() == discover_workers()["keras"].requirements.read_text()
    paths = {environment_path(spec.folder, tmp_path, spec.version) for spec in (older, newer)}
    assert len(paths) == 2 and all(path.name.startswith("keras-") for path in paths)
    assert environment_path(newer.folder, tmp_path) in paths  # the pinned version reuses the usual environment


def test_a_pinned_version_without_at_keeps_the_plain_name():
    (spec,) = resolve_workers("pytorch")
    assert (spec.label, spec.version, spec.framework_version) == ("pytorch", None, "2.14.1")
    assert pinned_version(discover_workers()["pytorch"]) == "2.14.1"


def test_gpu_requirements_rename_only_the_cpu_build_and_keep_the_version():
    keras = discover_workers()["keras"]
    gpu = requirements_text(keras, "3.14.0", gpu=True)
    assert "tensorflow[and-cuda]==2.21.0" in gpu.splitlines() and "keras==3.14.0" in gpu.splitlines()
    assert not any(line.startswith("tensorflow-cpu") for line in gpu.splitlines())


def test_a_version_specific_requirements_file_wins_and_must_pin_that_version(tmp_path):
    folder = tmp_path / "toy"
    (folder / "cxrbench_toy").mkdir(parents=True)
    (folder / "cxrbench_toy" / "__init__.py").touch()
    (folder / "worker.toml").write_text('name = "toy"\nbackend = "cxrbench_toy.trainer:Toy"\nrequirements = "requirements.txt"\n'
                                        'framework_package = "torch"\n')
    (folder / "requirements.txt").write_text("torch==2.14.1\ntorchvision==0.29.1\n")
    (folder / "requirements-2.13.0.txt").write_text("torch==2.13.0\ntorchvision==0.28.0\n")
    (folder / "requirements-2.12.0.txt").write_text("torch==2.11.0\n")
    (toy_old, toy_odd, toy_new) = resolve_workers("toy@2.13.0,toy@2.12.0,toy@2.15.0", root=tmp_path)
    assert toy_old.requirements() == "torch==2.13.0\ntorchvision==0.28.0\n"
    assert toy_new.requirements() == "torch==2.15.0\ntorchvision==0.29.1\n"
    with pytest.raises(ValueError, match=r"requirements-2.12.0.txt: does not pin torch==2.12.0"):
        toy_odd.requirements()


def test_naming_a_worker_twice_is_an_error():
    with pytest.raises(ValueError, match="named twice"):
        resolve_workers("pytorch,pytorch")
    with pytest.raises(ValueError, match="same pytorch 2.14.1 as another"):
        resolve_workers("pytorch,pytorch@2.14.1")


@pytest.mark.parametrize("selection, message", [
    ("keras@", "'' is not a version"),
    ("keras@latest", "'latest' is not a version"),
    ("null@1.0", "pins no framework"),
    ("kears@3.14.0", "unknown worker 'kears'"),
])
def test_bad_versions_are_refused_with_the_entry_named(selection, message):
    with pytest.raises(ValueError, match=message):
        resolve_workers(selection)


def test_a_worker_reporting_another_version_than_asked_is_an_error():
    (spec,) = resolve_workers("tensorflow@2.20.0")
    spec.check_reported({"tensorflow": "2.20.0", "numpy": "2.4.6"})
    with pytest.raises(RuntimeError, match=r"worker 'tensorflow@2.20.0' reports tensorflow 2.21.0, not the 2.20.0 asked for"):
        spec.check_reported({"tensorflow": "2.21.0"})
    (torch,) = resolve_workers("pytorch@2.14.1")
    torch.check_reported({"torch": "2.14.1+cu128"})  # a local build tag is the same version
    resolve_workers("pytorch")[0].check_reported({"torch": "9.9.9"})  # nothing asked, nothing to check
