"""What the report says each worker ran, built from the versions the worker reported (no framework here)."""

from __future__ import annotations

import pytest

from harness.config import BenchmarkConfig
from harness.config_checks import addressed_options, check_named_workers, option_targets
from harness.report.framework_names import framework_name
from harness.report.sections import accuracy_table, efficiency_table, framework, framework_names

# What each worker reports (GetMetadata's framework_versions), as run.json keeps it.
KERAS_ON = {
    "tensorflow": {"keras": "3.15.1", "keras_backend": "tensorflow", "tensorflow": "2.21.0", "numpy": "2.4.6",
                   "python": "3.11.9"},
    "jax": {"keras": "3.15.1", "keras_backend": "jax", "jax": "0.10.2", "jaxlib": "0.10.2", "numpy": "2.4.6",
            "python": "3.11.9"},
    "torch": {"keras": "3.15.1", "keras_backend": "torch", "torch": "2.14.1+cu130", "cuda": "13.0", "cudnn": "92400"},
}
PYTORCH = {"torch": "2.14.1+cu130", "torchvision": "0.29.1+cu130", "numpy": "2.4.6", "python": "3.11.9"}
TENSORFLOW = {"tensorflow": "2.21.0", "numpy": "2.4.6", "python": "3.11.9"}
JAX = {"jax": "0.10.2", "jaxlib": "0.10.2", "flax": "0.12.8", "optax": "0.2.8", "numpy": "2.4.6", "python": "3.11.9"}


@pytest.mark.parametrize("versions, name", [
    (KERAS_ON["tensorflow"], "Keras 3.15.1 on TensorFlow 2.21.0"),
    (KERAS_ON["jax"], "Keras 3.15.1 on JAX 0.10.2"),
    (KERAS_ON["torch"], "Keras 3.15.1 on PyTorch 2.14.1"),
    (PYTORCH, "PyTorch 2.14.1"),
    (TENSORFLOW, "TensorFlow 2.21.0"),
    (JAX, "JAX 0.10.2 (Flax 0.12.8)"),
    ({"jax": "0.10.2", "jaxlib": "0.10.2"}, "JAX 0.10.2"),
    ({"keras": "3.16.0", "keras_backend": "openvino"}, "Keras 3.16.0 on openvino"),  # a backend it did not version
    ({"keras": "3.15.1"}, "Keras 3.15.1"),  # an older Keras worker that did not say its backend
    ({"numpy": "2.4.6", "python": "3.11.9"}, "n/a"),  # the null worker: no framework
    ({"mxnet": "1.9.1", "python": "3.11.9"}, "mxnet 1.9.1"),
])
def test_the_name_is_built_from_what_the_worker_reported(versions, name):
    assert framework_name(versions) == name


def test_the_tables_name_each_workers_framework_beside_its_label():
    run = {"workers": {"keras": {"reported": {"framework_versions": KERAS_ON["tensorflow"]}},
                       "keras[jax]": {"reported": {"framework_versions": KERAS_ON["jax"]}},
                       "jax": {"reported": {"framework_versions": JAX}}}}
    spread = {"median": 100.0, "min": 90.0, "max": 110.0, "n": 3}
    result = {"test": {"macro_auroc": 0.75}, "efficiency": {key: spread for key in (
        "seconds_per_epoch", "train_images_per_second", "compute_images_per_second", "first_step_seconds",
        "prediction_images_per_second")}, "parameters": {"trainable": 1, "non_trainable": 0},
        "model_size_bytes": {"neutral_safetensors": 1}}
    metrics = {name: result for name in run["workers"]}
    names = framework_names(run, metrics)
    assert names == {"keras": "Keras 3.15.1 on TensorFlow 2.21.0", "keras[jax]": "Keras 3.15.1 on JAX 0.10.2",
                     "jax": "JAX 0.10.2 (Flax 0.12.8)"}
    accuracy = accuracy_table(metrics, None, names)
    assert accuracy[0].startswith("| worker | framework | macro AUROC |")
    assert accuracy[3].startswith("| keras[jax] | Keras 3.15.1 on JAX 0.10.2 | **0.750** |")
    efficiency = efficiency_table(metrics, None, names)
    assert efficiency[0].startswith("| worker | framework | s/epoch |")
    assert efficiency[4].startswith("| jax | JAX 0.10.2 (Flax 0.12.8) | 100.0 (90.0–110.0) |")
    assert accuracy_table(metrics, None)[0].startswith("| worker | macro AUROC |")  # without names, as before
    assert framework(run, "keras[jax]") == "Keras 3.15.1 on JAX 0.10.2 (jax 0.10.2, jaxlib 0.10.2, keras 3.15.1, keras_backend jax)"


def test_an_option_reaches_a_variant_by_its_worker_its_variant_or_its_full_label():
    options = ("keras.jit_compile=false", "keras[jax].jit_compile=true", "keras[jax]@3.14.0.extra=1")
    assert option_targets("keras[jax]@3.14.0") == ["keras", "keras[jax]", "keras[jax]@3.14.0"]
    assert addressed_options("keras", options) == {"jit_compile": "false"}
    assert addressed_options("keras[torch]", options) == {"jit_compile": "false"}  # every Keras worker
    assert addressed_options("keras[jax]", options) == {"jit_compile": "true"}  # the more specific wins
    assert addressed_options("keras[jax]@3.14.0", options) == {"jit_compile": "true", "extra": "1"}
    check_named_workers(["keras[jax]"], [], ("keras.jit_compile=true", "keras[jax].jit_compile=true"))
    with pytest.raises(ValueError, match=r"'keras\[jax\].jit_compile=true' is for worker 'keras\[jax\]', which is not "
                                         r"in this run \(keras, keras\[torch\]\)"):
        check_named_workers(["keras", "keras[torch]"], [], ("keras[jax].jit_compile=true",))
    config = BenchmarkConfig(workers="keras,keras[jax]", options=("keras[jax].jit_compile=false",))
    assert [spec.label for spec in config.selected_workers()] == ["keras", "keras[jax]"]
    assert (config.training("keras").options, config.training("keras[jax]").options) == ({}, {"jit_compile": "false"})
