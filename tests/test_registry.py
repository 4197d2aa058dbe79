"""`--workers` selections: all, lists, framework versions side by side, variants (keras[jax]), and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxrbench_worker.requirements import requirements_text
from cxrbench_worker.worker_folder import WorkerFolder
from cxrbench_worker.worker_labels import safe_label, split_label, worker_label
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


# --- variants: keras[jax], keras[torch] --------------------------------------------------------------

def test_a_variant_is_labelled_with_brackets_and_runs_its_own_requirements_and_environment(tmp_path):
    keras, on_jax, on_torch_older = resolve_workers("keras,keras[jax],keras[torch]@3.14.0")
    assert [spec.label for spec in (keras, on_jax, on_torch_older)] == ["keras", "keras[jax]", "keras[torch]@3.14.0"]
    assert [spec.safe_label for spec in (keras, on_jax, on_torch_older)] == ["keras", "keras-jax", "keras-torch@3.14.0"]
    assert {spec.name for spec in (keras, on_jax, on_torch_older)} == {"keras"}  # the folder is the same
    assert (keras.variant, on_jax.variant, on_torch_older.variant) == (None, "jax", "torch")
    assert keras.folder.environment["KERAS_BACKEND"] == "tensorflow"
    assert on_jax.folder.environment["KERAS_BACKEND"] == "jax" and on_jax.folder.label == "keras[jax]"
    assert "jax==0.10.2" in on_jax.requirements().splitlines() and "tensorflow-cpu" not in on_jax.requirements()
    assert "keras==3.14.0" in on_torch_older.requirements().splitlines()  # the version moves the variant's own pin
    assert "torch==2.14.1" in on_torch_older.requirements().splitlines()
    assert "jax[cuda13]==0.10.2" in on_jax.requirements(gpu=True).splitlines()  # the variant's own [gpu] table
    paths = {environment_path(spec.folder, tmp_path, spec.version) for spec in (keras, on_jax)}
    assert sorted(path.name.rsplit("-", 1)[0] for path in paths) == ["keras", "keras-jax"]


def test_all_runs_no_variant_and_the_same_backend_twice_is_refused():
    assert "keras" in [spec.label for spec in resolve_workers("all")]
    assert not [spec for spec in resolve_workers("all") if spec.variant]
    with pytest.raises(ValueError, match=r"'keras\[jax\]' is named twice"):
        resolve_workers("keras[jax],keras[jax]")
    with pytest.raises(ValueError, match=r"same keras\[jax\] 3.15.1 as another"):
        resolve_workers("keras[jax],keras[jax]@3.15.1")
    assert len(resolve_workers("keras,keras[jax],keras[torch],keras@3.14.0")) == 4


@pytest.mark.parametrize("selection, message", [
    ("keras[tf]", r"'keras\[tf\]': worker 'keras' has no variant 'tf' \(its variants: jax, torch\)"),
    ("pytorch[jax]", r"'pytorch\[jax\]': worker 'pytorch' has no variants, so no 'jax' .*declares no \[variants"),
    ("keras[jax", r"'keras\[jax' is not a worker label: write NAME, NAME\[VARIANT\]"),
    ("keras[JAX]", "is not a worker label"),
    ("keras[]", "is not a worker label"),
    ("keras[jax]@latest", r"'latest' is not a version \(write e.g. keras\[jax\]@3.14.0\)"),
    ("kears[jax]", "unknown worker 'kears'"),
])
def test_bad_variants_are_refused_naming_the_entry_and_the_known_ones(selection, message):
    with pytest.raises(ValueError, match=message):
        resolve_workers(selection)


def toy_with_variants(root: Path) -> Path:
    folder = root / "toy"
    (folder / "cxrbench_toy").mkdir(parents=True)
    (folder / "cxrbench_toy" / "__init__.py").touch()
    (folder / "requirements.txt").write_text("toy==1.0\ntoy-cpu==1.0\n")
    (folder / "requirements-fast.txt").write_text("toy==1.0\nfast==2.0\n")
    (folder / "requirements-slow.txt").write_text("toy==1.0\n")
    (folder / "worker.toml").write_text(
        'name = "toy"\nbackend = "cxrbench_toy.trainer:Toy"\nrequirements = "requirements.txt"\nframework_package = "toy"\n'
        '[environment]\nA = "1"\nB = "1"\n[gpu]\npackages = { "toy-cpu" = "toy-gpu" }\nbase_image = "base:1"\n'
        '[variants.fast]\ndescription = "fast toy"\nrequirements = "requirements-fast.txt"\nenvironment = { B = "2" }\n'
        '[variants.fast.gpu]\npackages = { "fast" = "fast[cuda]" }\nbase_image = "base:2"\n'
        '[variants.slow]\nrequirements = "requirements-slow.txt"\n')
    return folder


def test_a_variant_merges_its_environment_and_replaces_or_inherits_the_gpu_table_whole(tmp_path):
    folder = toy_with_variants(tmp_path)
    toy = WorkerFolder.read(folder)
    assert toy.variant_names == ("fast", "slow") and toy.label == "toy"
    fast, slow = toy.with_variant("fast"), WorkerFolder.read(folder, variant="slow")
    assert (fast.label, fast.description, fast.requirements) == ("toy[fast]", "fast toy", folder / "requirements-fast.txt")
    assert fast.environment == {"A": "1", "B": "2"}  # its own over the worker's
    assert (fast.gpu_packages, fast.base_image) == ({"fast": "fast[cuda]"}, "base:2")
    assert (slow.gpu_packages, slow.base_image) == ({"toy-cpu": "toy-gpu"}, "base:1")  # none of its own: inherited
    assert slow.description == toy.description and fast.with_variant(None) == toy
    (spec,) = resolve_workers("toy[fast]@1.1", root=tmp_path)
    assert spec.requirements() == "toy==1.1\nfast==2.0\n"
    (folder / "requirements-fast-1.2.txt").write_text("toy==1.2\nfast==2.1\n")  # a variant's version file
    assert resolve_workers("toy[fast]@1.2", root=tmp_path)[0].requirements() == "toy==1.2\nfast==2.1\n"
    assert resolve_workers("toy@1.2", root=tmp_path)[0].requirements() == "toy==1.2\ntoy-cpu==1.0\n"


@pytest.mark.parametrize("table, message", [
    ('[variants.Fast]\nrequirements = "requirements.txt"\n', "variant name 'Fast' must be lower case"),
    ('[variants.fast]\nrequirements = "missing.txt"\n', r"field 'variants.fast.requirements' must name"),
    ('[variants.fast]\nrequirements = "requirements.txt"\nbackend = "x"\n',
     r"table 'variants.fast' has unknown field\(s\) backend"),
    ('[variants.fast]\nrequirements = "requirements.txt"\nenvironment = { A = 1 }\n',
     r"table 'variants.fast.environment' must map names to strings"),
    ('variants = "fast"\n', r"'variants' must be a table of tables"),
])
def test_a_bad_variant_table_names_the_file_and_the_field(tmp_path, table, message):
    folder = tmp_path / "toy"
    (folder / "cxrbench_toy").mkdir(parents=True)
    (folder / "cxrbench_toy" / "__init__.py").touch()
    (folder / "requirements.txt").write_text("toy==1.0\n")
    (folder / "worker.toml").write_text('name = "toy"\nbackend = "cxrbench_toy.trainer:Toy"\n'
                                        'requirements = "requirements.txt"\n' + table)
    with pytest.raises(ValueError, match=rf"{folder / 'worker.toml'}: .*{message}"):
        WorkerFolder.read(folder)


def test_labels_split_and_their_safe_form_holds_no_bracket():
    assert split_label("keras[jax]@3.14.0") == ("keras", "jax", "3.14.0")
    assert split_label("keras") == ("keras", None, None) and split_label("keras@3.14.0") == ("keras", None, "3.14.0")
    assert worker_label("keras", "torch", "3.14.0") == "keras[torch]@3.14.0"
    assert safe_label("keras[torch]@3.14.0") == "keras-torch@3.14.0" and safe_label("keras@3.14.0") == "keras@3.14.0"
