"""How a worker is named: `NAME[VARIANT]@VERSION`, and the form of that label safe in names and paths.

`keras` is a worker folder; `keras[jax]` its variant "jax" (worker.toml's `[variants.jax]`: its own
requirements and environment, e.g. KERAS_BACKEND=jax); `keras[jax]@3.14.0` that variant at another
framework version. The label is the key of a worker in results, logs and the report.

Brackets are awkward outside that key (a shell glob, a Docker Compose service name), so file and
service names use `safe_label`: `keras-jax@3.14.0`; MLflow, which allows no "@" either, `key_label`:
`keras-jax-v3.14.0`.
Worker names are Python identifiers (their package is `cxrbench_<name>`) and variant names are
lower-case identifiers, so neither holds a "-" and the safe form is unambiguous.

Standard library only: an image build reads worker folders before anything is installed.
"""

from __future__ import annotations

import re
from typing import NamedTuple

VARIANT_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
LABEL_PATTERN = re.compile(r"^(?P<name>[^\[\]@]+)(?:\[(?P<variant>[^\[\]@]*)\])?(?:@(?P<version>.*))?$")


class WorkerLabel(NamedTuple):
    """The parts of a worker label: folder name, variant (None: the worker's own), framework version."""

    name: str
    variant: str | None
    version: str | None


def worker_label(name: str, variant: str | None = None, version: str | None = None) -> str:
    """`keras`, `keras[jax]`, `keras@3.14.0` or `keras[jax]@3.14.0`."""
    return name + (f"[{variant}]" if variant else "") + (f"@{version}" if version else "")


def split_label(label: str) -> WorkerLabel:
    """The parts of `keras[jax]@3.14.0`; ValueError saying how to write it when it is malformed.

    Only the form is checked here: whether the worker, variant and version exist is the registry's
    and pip's to say."""
    match = LABEL_PATTERN.match(label.strip())
    if match is None or (match["variant"] is not None and not VARIANT_PATTERN.match(match["variant"])):
        raise ValueError(f"{label!r} is not a worker label: write NAME, NAME[VARIANT], NAME@VERSION or "
                         "NAME[VARIANT]@VERSION, e.g. keras, keras[jax] or keras[jax]@3.14.0")
    return WorkerLabel(match["name"], match["variant"], match["version"] if match["version"] is not None else None)


def safe_label(label: str) -> str:
    """The label as a file or service name: `keras[jax]@3.14.0` -> `keras-jax@3.14.0`.

    Labels without a variant are unchanged, so existing run directories keep their paths."""
    return label.replace("[", "-").replace("]", "")


def key_label(label: str) -> str:
    """The label where only letters, digits, "-", "_" and "." may stand (MLflow's metric and parameter
    keys, registered model names): `keras[jax]@3.14.0` -> `keras-jax-v3.14.0`, `keras@3.14.0` -> `keras-v3.14.0`."""
    name, variant, version = split_label(label)
    return safe_label(worker_label(name, variant)) + (f"-v{version}" if version else "")
