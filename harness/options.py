"""Command-line options declared once, on the dataclass fields they fill.

A field declared with `option(...)` carries its flag, help, choices, parser and check. From that one
declaration come the argparse arguments of every command that offers it (`add_options`), the
dataclass built from parsed arguments (`from_arguments`), its validation (`problems`, called by the
dataclass's `__post_init__`) and the README's option table (`markdown_table`; `python -m
harness.config README.md` rewrites it, and tests/test_options.py fails when it is stale).

Adding an option to `harness benchmark` is one field in harness/config.py:

    warmup_epochs: int = option(0, "--warmup-epochs", "epochs at a rising learning rate", check=at_least(0))
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

METADATA_KEY = "cxrbench_option"
Check = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class Option:
    """How one dataclass field appears on the command line."""

    flag: str  # "--image-size", or a bare name for a positional argument
    help: str  # one sentence; `backticks` mark code (kept in the README, dropped in --help)
    commands: tuple[str, ...]  # the commands offering it, e.g. ("benchmark", "parity")
    kind: str = "value"  # value | switch (store_true) | repeat (append, a tuple) | optional (nargs="?")
    parse: Callable[[str], Any] | None = None  # text -> value, as argparse's type (ValueError: refused)
    choices: tuple[Any, ...] | None = None
    check: Check | None = None  # value -> what is wrong with it, or None
    metavar: str | None = None
    group: str | None = None  # title of the --help section it is listed under
    shown_default: str | None = None  # the default in words, where its value would not say it
    command_defaults: tuple[tuple[str, Any], ...] = ()  # (command, default) where a command differs
    const: Any = None  # the value of an `optional` option given without one

    def default_for(self, command: str, default: Any) -> Any:
        """The default under `command`."""
        return dict(self.command_defaults).get(command, default)


def option(default: Any, flag: str, help: str, *, commands: Sequence[str] = ("benchmark", "parity"),
           kind: str = "value", parse: Callable[[str], Any] | None = None, choices: Sequence[Any] | None = None,
           check: Check | None = None, metavar: str | None = None, group: str | None = None,
           shown_default: str | None = None, command_defaults: dict[str, Any] | None = None,
           const: Any = None) -> Any:
    """A dataclass field that is also a command-line option (see the module docstring)."""
    if kind not in ("value", "switch", "repeat", "optional"):
        raise ValueError(f"option {flag}: unknown kind {kind!r}")
    declared = Option(flag, help, tuple(commands), kind, parse, tuple(choices) if choices is not None else None, check,
                      metavar, group, shown_default, tuple((command_defaults or {}).items()), const)
    return field(default=default, metadata={METADATA_KEY: declared})


def declared_options(cls: type, command: str | None = None) -> Iterator[tuple[dataclasses.Field, Option]]:
    """The fields of dataclass `cls` declared with `option`, in declaration order (those of `command` only)."""
    for item in dataclasses.fields(cls):
        declared = item.metadata.get(METADATA_KEY)
        if declared is not None and (command is None or command in declared.commands):
            yield item, declared


# Checks: each returns what is wrong with a value, or None.

def at_least(low: float, why: str = "") -> Check:
    """Refuse values below `low`."""
    return lambda value: None if value >= low else f"{value} must be at least {low:g}{why}"


def within(low: float, high: float, why: str = "") -> Check:
    """Refuse values outside [low, high]."""
    return lambda value: None if low <= value <= high else f"{value} must be within {low:g}..{high:g}{why}"


def positive_finite(value: float) -> str | None:
    """Refuse zero, negative, infinite and NaN values."""
    return None if math.isfinite(value) and value > 0 else f"{value} must be > 0"


def integer_list(text: str) -> tuple[int, ...]:
    """"0,1,2" -> (0, 1, 2); ValueError (argparse names the option) otherwise."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must be comma-separated integers, e.g. 0,1,2") from None


def problems(instance: Any, command: str | None = None) -> list[tuple[str, str]]:
    """(flag, what is wrong) for every declared field of `instance` whose value its declaration refuses."""
    found = []
    for item, declared in declared_options(type(instance), command):
        value = getattr(instance, item.name)
        if declared.choices is not None and value not in declared.choices:
            found.append((declared.flag, f"unknown {value!r} (known: {', '.join(map(str, declared.choices))})"))
        elif declared.check is not None and value is not None:
            problem = declared.check(value)
            if problem:
                found.append((declared.flag, problem))
    return found


def raise_problems(instance: Any, command: str | None = None) -> None:
    """ValueError naming the flag of the first refused value (for a dataclass's __post_init__)."""
    for flag, problem in problems(instance, command):
        raise ValueError(f"{flag}: {problem}")


def _plain(text: str) -> str:
    return text.replace("`", "")


# With code=True there is always a text (`off`, `none`): the README's table shows every default.
@overload
def default_text(item: dataclasses.Field, declared: Option, command: str, code: Literal[True]) -> str: ...


@overload
def default_text(item: dataclasses.Field, declared: Option, command: str, code: bool = False) -> str | None: ...


def default_text(item: dataclasses.Field, declared: Option, command: str, code: bool = False) -> str | None:
    """The default as a reader should see it: `all`, 32, off; None when it goes without saying."""
    if declared.shown_default is not None:
        return declared.shown_default if code else _plain(declared.shown_default)
    value = declared.default_for(command, item.default)
    if declared.kind == "switch" or value is None:
        return "off" if code else None
    if value in ((), ""):
        return "none" if code else None
    if isinstance(value, float):
        shown = f"{value:g}"
    else:
        shown = str(value)
    return f"`{shown}`" if code and isinstance(value, (str, Path)) else shown


def add_options(parser: argparse.ArgumentParser, cls: type, command: str) -> None:
    """Add the options of `cls` that `command` offers to `parser`, grouped as declared."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for item, declared in declared_options(cls, command):
        target: Any = parser
        if declared.group:
            target = groups.setdefault(declared.group, parser.add_argument_group(declared.group))
        shown = default_text(item, declared, command)
        text = _plain(declared.help) + (f" (default: {shown})" if shown else "")
        keywords: dict[str, Any] = {"help": text.replace("%", "%%")}
        if declared.flag.startswith("-"):
            keywords["dest"] = item.name
        if declared.kind == "switch":
            keywords["action"] = "store_true"
        else:
            keywords["default"] = [] if declared.kind == "repeat" else declared.default_for(command, item.default)
            if declared.kind == "repeat":
                keywords["action"] = "append"
            if declared.kind == "optional":
                keywords.update(nargs="?", const=declared.const)
            if declared.parse is not None:
                keywords["type"] = declared.parse
            if declared.choices is not None:
                keywords["choices"] = declared.choices
            if declared.choices is None and declared.flag.startswith("-"):
                keywords["metavar"] = declared.metavar or declared.flag.lstrip("-").upper().replace("-", "_")
        target.add_argument(declared.flag, **keywords)


def from_arguments(cls: type, args: argparse.Namespace, command: str, **fixed: Any) -> Any:
    """An instance of `cls` from parsed arguments (its own validation runs as it is made)."""
    values: dict[str, Any] = dict(fixed)
    for item, declared in declared_options(cls, command):
        value = getattr(args, item.name)
        values[item.name] = tuple(value) if declared.kind == "repeat" else value
    return cls(**values)


def markdown_table(sources: Sequence[type], commands: Sequence[str]) -> str:
    """The README's table: every option of `sources` offered by any of `commands`, in order."""
    rows = ["| option | default | for | meaning |", "|---|---|---|---|"]
    seen = set()
    for cls in sources:
        for item, declared in declared_options(cls):
            offered = [command for command in commands if command in declared.commands]
            if not offered or declared.flag in seen:
                continue
            seen.add(declared.flag)
            defaults = {command: default_text(item, declared, command, code=True) for command in offered}
            first = defaults[offered[0]]
            shown = first + "".join(f" ({command}: {text})" for command, text in defaults.items() if text != first)
            flag = declared.flag + (" [" + (declared.metavar or "VALUE") + "]" if declared.kind == "optional" else "")
            rows.append(f"| `{flag}` | {shown} | {', '.join(offered)} | {declared.help} |")
    return "\n".join(rows)


README_MARKERS = ("<!-- options table: generated from harness/config.py by `python -m harness.config README.md` -->",
                  "<!-- end of options table -->")


def readme_with_table(text: str, table: str) -> str:
    """`text` with the part between README_MARKERS replaced by `table`; ValueError without the markers."""
    start, end = README_MARKERS
    pattern = re.compile(re.escape(start) + r"\n.*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"README: the markers {start!r} ... {end!r} are missing")
    return pattern.sub(lambda _: f"{start}\n{table}\n{end}", text)
