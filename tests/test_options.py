"""Every benchmark / parity option is declared once (harness/config.py) and everything comes from it:
the parsers, the config's defaults and checks, and the README's option table."""

from __future__ import annotations

import argparse
import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from harness import cli
from harness.config import BenchmarkConfig, ParityOptions, options_table
from harness.options import (
    README_MARKERS,
    add_options,
    at_least,
    declared_options,
    from_arguments,
    markdown_table,
    option,
    raise_problems,
    readme_with_table,
)


def parse(command: str, *args: str) -> argparse.Namespace:
    return cli.build_parser().parse_args([command, *args])


def test_the_readme_table_is_the_one_the_declarations_give():
    readme = (REPO_ROOT / "README.md").read_text()
    assert readme_with_table(readme, options_table()) == readme, (
        "README.md's options table is stale: run `.venv/bin/python -m harness.config README.md`")


def test_the_readme_table_lists_every_benchmark_and_parity_flag_once():
    table = options_table()
    flags = [declared.flag for cls in (BenchmarkConfig, ParityOptions) for _, declared in declared_options(cls)
             if {"benchmark", "parity"} & set(declared.commands)]
    assert "--lr-threshold" in flags  # the option the hand-written table had lost
    for flag in flags:
        rows = [line for line in table.splitlines() if line.startswith((f"| `{flag}` |", f"| `{flag} ["))]
        assert len(rows) == 1, flag


@pytest.mark.parametrize("command", ["benchmark", "parity"])
def test_parsed_defaults_are_the_config_defaults(command: str):
    parsed = from_arguments(BenchmarkConfig, parse(command), command)
    expected = BenchmarkConfig(batch_size=16) if command == "parity" else BenchmarkConfig()
    assert parsed == expected


def test_parity_options_come_from_their_own_declarations():
    assert from_arguments(ParityOptions, parse("parity", "--steps", "5", "--json", "out.json"), "parity") == \
        ParityOptions(steps=5, json=Path("out.json"))
    with pytest.raises(ValueError, match="^--steps: 0 must be at least 1$"):
        from_arguments(ParityOptions, parse("parity", "--steps", "0"), "parity")


def test_the_command_line_refuses_what_the_config_refuses():
    with pytest.raises(ValueError, match="^--epochs: 0 must be at least 1$"):
        from_arguments(BenchmarkConfig, parse("benchmark", "--epochs", "0"), "benchmark")
    with pytest.raises(ValueError, match="^--epochs: 0 must be at least 1$"):
        BenchmarkConfig(epochs=0)


def test_shared_options_reach_report_and_data_prepare_from_the_same_declaration():
    assert parse("report", "run", "--bootstrap", "200").bootstrap == 200
    assert parse("data", "prepare", "nih", "--root", "x", "--image-size", "128").image_size == 128
    assert parse("data", "prepare", "nih", "--root", "x").image_size == BenchmarkConfig().image_size
    with pytest.raises(ValueError, match="^--image-size: 8 must be within 32..1024$"):
        from_arguments(BenchmarkConfig, parse("data", "prepare", "nih", "--root", "x", "--image-size", "8"), "data prepare")


def test_the_benchmark_and_parity_parsers_add_no_option_by_hand():
    source = ast.parse((REPO_ROOT / "harness" / "cli.py").read_text())
    builders = [node for node in source.body if isinstance(node, ast.FunctionDef)
                and node.name in ("_benchmark_parser", "_parity_parser")]
    assert len(builders) == 2
    by_hand = [node.lineno for builder in builders for node in ast.walk(builder)
               if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument"]
    assert by_hand == []


def test_a_new_option_is_one_declaration():
    # What adding `--warmup-epochs` to the benchmark would take: one field. Parser, default, check and
    # the README row all follow.
    @dataclass(frozen=True)
    class Scratch:
        warmup_epochs: int = option(0, "--warmup-epochs", "epochs at a rising learning rate", commands=("benchmark",),
                                    parse=int, check=at_least(0))

        def __post_init__(self) -> None:
            raise_problems(self)

    parser = argparse.ArgumentParser()
    add_options(parser, Scratch, "benchmark")
    assert from_arguments(Scratch, parser.parse_args(["--warmup-epochs", "2"]), "benchmark") == Scratch(2)
    assert from_arguments(Scratch, parser.parse_args([]), "benchmark") == Scratch(0)
    with pytest.raises(ValueError, match="^--warmup-epochs: -1 must be at least 0$"):
        Scratch(-1)
    assert "| `--warmup-epochs` | 0 | benchmark | epochs at a rising learning rate |" in markdown_table([Scratch], ["benchmark"])
    assert "epochs at a rising learning rate (default: 0)" in parser.format_help()


def test_a_readme_without_the_markers_is_named():
    with pytest.raises(ValueError, match="markers"):
        readme_with_table("# no table here\n", options_table())
    start, end = README_MARKERS
    assert readme_with_table(f"a\n{start}\nold\n{end}\nb\n", "new") == f"a\n{start}\nnew\n{end}\nb\n"


def test_the_default_run_measures_training_noise_with_three_paired_seeds():
    assert BenchmarkConfig().training_seeds == (0, 1, 2)
    assert BenchmarkConfig(seed=5).training_seeds == (5, 6, 7)  # the data seed is the first training seed
    assert BenchmarkConfig(seeds=(4,)).training_seeds == (4,)
    assert BenchmarkConfig().to_dict()["seeds"] == [0, 1, 2] and BenchmarkConfig().equivalence_margin == 0.01
    with pytest.raises(ValueError, match="--equivalence-margin"):
        BenchmarkConfig(equivalence_margin=0.0)
