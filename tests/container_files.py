"""What the container-file tests share: the worker folders and their declared base images,
compose.yaml and its schema, a reader of just enough Dockerfile syntax (with the build arguments
put in), and .dockerignore's matching (tests/test_compose_file.py, tests/test_dockerfiles.py).
There is no Docker engine where these tests run: they read files."""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import jsonschema
from ruamel.yaml import YAML

from cxrbench_worker.worker_folder import WorkerFolder

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO_ROOT / "compose.yaml"
DOCKERFILE = REPO_ROOT / "workers" / "Dockerfile"  # the one image recipe of every worker
BUILD_ARGUMENTS = ("WORKER", "VARIANT", "FRAMEWORK_VERSION", "BASE_IMAGE")
CONTAINER_PORT = 50051
SECRET_NAMES = ("worker_tls_cert", "worker_tls_key", "worker_token")
# The image's variable -> the compose secret it must name (mounted at /run/secrets/<secret>).
SECRET_VARIABLES = {"CXRBENCH_TLS_CERT": "worker_tls_cert", "CXRBENCH_TLS_KEY": "worker_tls_key",
                    "CXRBENCH_TOKEN_FILE": "worker_token"}
# What a GPU image installs instead of the local runtime's CPU package (worker.toml's [gpu] table),
# by compose service, written out here so the test does not take the rule from the code it checks.
GPU_RENAMES = {"pytorch": {}, "tensorflow": {"tensorflow-cpu": "tensorflow[and-cuda]"},
               "keras": {"tensorflow-cpu": "tensorflow[and-cuda]"}, "jax": {"jax": "jax[cuda13]"},
               "keras-jax": {"jax": "jax[cuda13]"},
               "keras-torch": {}}


def listed_workers() -> list[WorkerFolder]:
    """Every worker folder that `--workers all` runs (the null worker is not listed), and after each
    the folder as each of its variants sees it (keras[jax], keras[torch]): each has a compose service."""
    folders = [WorkerFolder.read(toml.parent) for toml in sorted((REPO_ROOT / "workers").glob("*/worker.toml"))]
    return [folder.with_variant(variant) for folder in folders if folder.listed
            for variant in (None, *folder.variant_names)]


def service_of(folder: WorkerFolder) -> str:
    """The compose service of a worker folder: its name, or for a variant `<name>-<variant>` (keras-jax)."""
    return f"{folder.name}-{folder.variant}" if folder.variant else folder.name


def variable_of(service: str) -> str:
    """compose.yaml's variable prefix of a service: KERAS_JAX for keras-jax."""
    return service.upper().replace("-", "_")


WORKERS = listed_workers()
WORKER_IDS = [service_of(folder) for folder in WORKERS]  # compose services: keras, keras-jax, ...
WORKER_LABELS = [folder.label for folder in WORKERS]  # as --workers names them: keras, keras[jax], ...


def declared_base_image(folder: WorkerFolder) -> str | None:
    """The worker's CUDA base image as its worker.toml declares it ([gpu] base_image; a variant's
    [variants.<name>.gpu] base_image when it has that table), read as TOML."""
    data = tomllib.loads((folder.path / "worker.toml").read_text())
    variant = data.get("variants", {}).get(folder.variant, {}) if folder.variant else {}
    return (variant["gpu"] if "gpu" in variant else data.get("gpu", {})).get("base_image")


def load_yaml(path: Path) -> dict:
    return YAML(typ="safe").load(path.read_text())


def compose() -> dict:
    return load_yaml(COMPOSE_FILE)


def compose_validator() -> jsonschema.protocols.Validator:
    """A validator for the Compose specification's schema, as vendored by check-jsonschema."""
    resource = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(resource.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)  # the schema's own $schema draft
    validator_class.check_schema(schema)
    return validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)


def schema_errors(document: dict) -> list[str]:
    return [f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
            for error in compose_validator().iter_errors(document)]


# --- Dockerfiles: just enough of the syntax to read these files ---------------------------------

@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    arguments: str  # continuation lines joined


def with_arguments(text: str, arguments: dict[str, str]) -> str:
    """`text` with $NAME and ${NAME} of these build arguments put in, as Docker does in COPY and ENV."""
    for name, value in arguments.items():
        text = text.replace("${" + name + "}", value).replace("$" + name, value)
    return text


def instructions(path: Path) -> list[Instruction]:
    """The Dockerfile's instructions in order: comments dropped, backslash continuations joined."""
    result, pending = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or (not line.strip() and not pending):
            continue  # a comment (parser directives included), or a blank line between instructions
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, arguments = full.partition(" ")
        result.append(Instruction(keyword.upper(), " ".join(arguments.split())))
    assert not pending, f"{path}: ends inside a continued line"
    return result


def exec_form(arguments: str) -> list[str]:
    """The JSON array of a CMD / HEALTHCHECK CMD, or fail."""
    assert arguments.startswith("["), f"not exec form (a JSON array): {arguments}"
    return json.loads(arguments)


def copy_sources(instruction: Instruction) -> tuple[list[str], str]:
    """(sources, destination) of a COPY or ADD, flags such as --chown dropped."""
    words = json.loads(instruction.arguments) if instruction.arguments.startswith("[") else shlex.split(instruction.arguments)
    words = [word for word in words if not word.startswith("--")]
    return words[:-1], words[-1]


def environment(path: Path, arguments: dict[str, str]) -> dict[str, str]:
    """Every ENV the Dockerfile sets (KEY=VALUE form), later ones winning, build arguments put in."""
    values = {}
    for instruction in instructions(path):
        if instruction.keyword == "ENV":
            for word in shlex.split(instruction.arguments):
                key, _, value = word.partition("=")
                values[key] = with_arguments(value, arguments)
    return values


# --- .dockerignore, as Docker's pattern matcher reads it ----------------------------------------

def _pattern_regex(pattern: str) -> re.Pattern:
    """Docker's .dockerignore pattern as a regex: `**` any depth, `*` and `?` within one name."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(f"^{out}$")


def dockerignore_rules() -> list[tuple[bool, re.Pattern]]:
    """(is an exception '!', regex) for each pattern of .dockerignore, in order."""
    rules = []
    for line in (REPO_ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line[1:] if negated else line).lstrip("/")
        rules.append((negated, _pattern_regex(pattern)))
    return rules


def excluded_from_context(relative: str) -> bool:
    """Whether the build context leaves this path out: the last matching pattern decides, and a
    pattern that matches a parent folder matches everything in it (moby/patternmatcher's rule)."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negated, regex in dockerignore_rules():
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def is_build_junk(path: Path) -> bool:
    return "__pycache__" in path.parts or path.suffix == ".pyc"
