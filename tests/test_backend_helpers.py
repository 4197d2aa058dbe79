"""The SDK's checks that every backend shares (cxrbench_worker.backend), so each worker refuses the
same requests with the same message: learning rates, true/false switches, architectures, heads."""

from __future__ import annotations

import math

import pytest

from cxrbench_worker.backend import Backend, UnsupportedOption, check_architecture, check_num_labels


@pytest.mark.parametrize("rate", [1e-3, 5, 1e-12])
def test_a_finite_positive_learning_rate_is_returned_as_a_float(rate):
    checked = Backend.check_learning_rate(rate)
    assert checked == rate and type(checked) is float


@pytest.mark.parametrize("rate", [0.0, -1e-3, math.inf, math.nan])
def test_a_learning_rate_that_is_not_finite_and_positive_names_the_field(rate):
    with pytest.raises(ValueError, match=rf"^learning_rate: {rate} must be finite and > 0$"):
        Backend.check_learning_rate(rate)
    with pytest.raises(ValueError, match=rf"^optimizer.learning_rate: {rate} must be finite and > 0$"):
        Backend.check_learning_rate(rate, "optimizer.learning_rate")


@pytest.mark.parametrize(("options", "expected"), [
    ({}, False), ({"jit_compile": "true"}, True), ({"jit_compile": "false"}, False),
    ({"jit_compile": "TRUE"}, True), ({"jit_compile": "False"}, False), ({"other": "true"}, False),
])
def test_a_boolean_option_reads_true_or_false_in_any_case_and_defaults_when_absent(options, expected):
    assert Backend.boolean_option(options, "jit_compile") is expected


def test_a_boolean_option_default_can_be_true():
    assert Backend.boolean_option({}, "jit_compile", default=True) is True


@pytest.mark.parametrize("value", ["yes", "1", "", "maybe"])
def test_a_boolean_option_with_another_value_names_the_option_and_the_value(value):
    with pytest.raises(ValueError, match=rf"^options.jit_compile: must be 'true' or 'false', got '{value}'$"):
        Backend.boolean_option({"jit_compile": value}, "jit_compile")


def test_an_unknown_architecture_is_unsupported_and_lists_the_known_ones():
    check_architecture("resnet50", {"resnet50": None, "densenet121": None})
    with pytest.raises(UnsupportedOption) as error:
        check_architecture("vgg16", {"resnet50": None, "densenet121": None})
    assert error.value.field == "architecture"
    assert str(error.value) == "architecture: unknown architecture 'vgg16' (known: resnet50, densenet121)"


def test_a_head_needs_at_least_one_logit():
    check_num_labels(1)
    with pytest.raises(ValueError, match=r"^num_labels must be at least 1, got 0$"):
        check_num_labels(0)
