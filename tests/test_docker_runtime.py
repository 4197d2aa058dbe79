"""`--runtime docker` against a stand-in `docker` executable: there is no Docker engine here.

The stand-in (written below) records every invocation with the variables compose.yaml reads and
acts just enough like Docker: `info`, `compose version`, `config --services`, `image inspect`
(missing until `compose build`), and `compose up`, which starts a real null worker on the
published port with the run's TLS certificate and token, as the container would. So these tests
check what the harness asks Docker to do, and that it then really talks TLS with a token to what
came up; they cannot check Docker itself (see docs/GPU_SMOKE_TEST.md for that, on a GPU host).
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT, SMALL_RUN, run_harness
from container_files import WORKER_IDS, WORKER_LABELS, compose
from harness.runtime.docker import DockerRuntime, image_tag, project_name, service_name, variable_prefix
from harness.runtime.registry import resolve_workers

FAKE_DOCKER = r'''#!{python}
"""A stand-in for docker: records its arguments, and plays the few parts the harness uses."""
import json, os, signal, subprocess, sys
from pathlib import Path

state = Path(os.environ["FAKE_DOCKER_STATE"])
args = sys.argv[1:]
read = {{k: v for k, v in os.environ.items() if k.endswith(("_VERSION", "_PORT")) or k == "CXRBENCH_SECRETS"}}
with open(state / "calls.jsonl", "a") as calls:
    calls.write(json.dumps({{"args": args, "env": read}}) + "\n")

if args[:1] == ["info"]:
    if os.environ.get("FAKE_DOCKER_NO_ENGINE"):
        sys.exit("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?")
    print("28.2.2")
elif args[:2] == ["compose", "version"]:
    print("Docker Compose version v2.40.3")
elif args[:2] == ["image", "inspect"]:
    if not (state / "built" / args[-1].replace("/", "_")).exists():
        sys.exit("Error: No such image: " + args[-1])
    print("sha256:" + "ab" * 32)
elif args[:1] == ["compose"]:
    options, rest = {{}}, args[1:]
    while rest[0].startswith("-"):
        options[rest[0]], rest = rest[1], rest[2:]
    command, service = rest[0], rest[-1]
    prefix = service.upper().replace("-", "_")  # keras-jax reads KERAS_JAX_VERSION, as compose.yaml does
    if command == "config":
        print(os.environ.get("FAKE_DOCKER_SERVICES", "pytorch\ntensorflow\nkeras\nnull"))
    elif command == "build":
        (state / "built").mkdir(exist_ok=True)
        tag = "cxrbench/{{}}:{{}}".format(service, os.environ.get(prefix + "_VERSION", "latest"))
        (state / "built" / tag.replace("/", "_")).touch()
    elif command == "up":
        if os.environ.get("FAKE_DOCKER_UP_FAILS"):
            sys.exit("container cxrbench-keras-1 is unhealthy")
        secrets = Path(os.environ["CXRBENCH_SECRETS"])
        worker = subprocess.Popen(
            [{python!r}, "-m", "cxrbench_worker", "--worker-dir", {null!r},
             "--address", "127.0.0.1:" + os.environ[prefix + "_PORT"], "--tls-cert", str(secrets / "tls.crt"),
             "--tls-key", str(secrets / "tls.key"), "--token-file", str(secrets / "token")],
            stdout=open(state / "worker.log", "a"), stderr=subprocess.STDOUT, start_new_session=True)
        (state / (options["-p"] + ".pid")).write_text(str(worker.pid))
    elif command == "logs":
        print("fake container log of " + service)
    elif command == "down":
        pid_file = state / (options["-p"] + ".pid")
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
            pid_file.unlink()
'''


@pytest.fixture
def fake_docker(tmp_path):
    """A folder holding the stand-in `docker`, first on PATH; yields (environment, state folder)."""
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.format(python=sys.executable, null=str(REPO_ROOT / "workers" / "null")))
    docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    environment = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_DOCKER_STATE": str(state)}
    return environment, state


def calls(state: Path) -> list[dict]:
    return [json.loads(line) for line in (state / "calls.jsonl").read_text().splitlines()]


def compose_calls(state: Path, command: str) -> list[dict]:
    return [call for call in calls(state) if call["args"][:1] == ["compose"] and command in call["args"]]


def null_benchmark_in_docker(environment: dict[str, str], out: Path, **stand_in: str):
    """`harness benchmark --runtime docker --workers null` with the stand-in, told FAKE_DOCKER_<KEY>=VALUE."""
    variables = {f"FAKE_DOCKER_{key.upper()}": value for key, value in stand_in.items()}
    return run_harness(["benchmark", "--runtime", "docker", "--workers", "null", "--epochs", "1", "--out", str(out),
                        *SMALL_RUN], REPO_ROOT, {**environment, **variables})


def test_two_keras_versions_are_built_started_and_torn_down_through_compose(fake_docker, tmp_path, monkeypatch):
    environment, state = fake_docker
    out = tmp_path / "results"
    arguments = ["benchmark", "--runtime", "docker", "--workers", "keras@3.14.0,keras", "--epochs", "1",
                 "--bootstrap", "0", "--out", str(out), *SMALL_RUN]
    result = run_harness(arguments, REPO_ROOT, environment)
    assert result.returncode == 0, result.stderr
    compose = ["compose", "-f", str(REPO_ROOT / "compose.yaml")]
    assert calls(state)[0]["args"] == ["info", "--format", "{{.ServerVersion}}"]
    assert calls(state)[1]["args"] == ["compose", "version"]
    assert calls(state)[2]["args"] == [*compose, "--profile", "keras", "config", "--services"]
    builds = compose_calls(state, "build")
    projects = [call["args"][4] for call in builds]
    assert [call["args"] for call in builds] == [[*compose, "-p", project, "--profile", "keras", "build", "keras"]
                                                for project in projects]
    assert projects[0].endswith("-keras-3-14-0") and projects[1].endswith("-keras") and projects[0] != projects[1]
    assert [call["env"]["KERAS_VERSION"] for call in builds] == ["3.14.0", "3.15.1"]  # image tag and build argument
    ups = compose_calls(state, "up")
    # Each version started three times: by the preflight (configured, its device read, stopped), for its
    # parity probe, and for its one training run (each run has a worker of its own).
    assert [call["args"][5:] for call in ups] == [["--profile", "keras", "up", "-d", "--wait", "--wait-timeout", "600", "keras"]] * 6
    assert [call["env"]["KERAS_VERSION"] for call in ups] == ["3.14.0", "3.15.1"] * 2 + ["3.14.0", "3.15.1"]
    assert all(call["env"]["KERAS_PORT"].isdigit() for call in ups)
    downs = compose_calls(state, "down")
    assert [call["args"][4] for call in downs] == projects * 3 and all("--remove-orphans" in call["args"] for call in downs)
    # The ordering that matters: every image built before the first container starts; each stopped before the next.
    order = [" ".join(call["args"]) for call in calls(state)]
    first_up = next(i for i, line in enumerate(order) if " up " in line)
    assert all(i < first_up for i, line in enumerate(order) if " build " in line)
    assert order.index(" ".join(downs[0]["args"])) < order.index(" ".join(ups[1]["args"]))
    secrets = Path(ups[0]["env"]["CXRBENCH_SECRETS"])
    assert not secrets.exists()  # this run's certificate and token are gone with the run

    (run,) = out.iterdir()
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed" and list(record["workers"]) == ["keras@3.14.0", "keras"]
    assert record["workers"]["keras@3.14.0"]["image"] == "cxrbench/keras:3.14.0"
    assert record["workers"]["keras"]["image"] == "cxrbench/keras:3.15.1"
    assert record["workers"]["keras"]["image_id"] == "sha256:" + "ab" * 32
    assert "fake container log of keras" in (run / "workers" / "keras@3.14.0.log").read_text()
    report = (run / "report.md").read_text()
    assert "| keras@3.14.0 |" in report and "| keras |" in report and "image `cxrbench/keras:3.14.0`" in report

    # Images exist now: preparing the same workers again builds nothing (the runtime alone, not a whole run).
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    runtime = DockerRuntime(secrets_root=tmp_path / "secrets")
    try:
        runtime.prepare(resolve_workers("keras@3.14.0,keras"))
    finally:
        runtime.close()
    assert len(compose_calls(state, "build")) == 2


def test_no_reachable_engine_says_so_and_names_the_local_runtime(fake_docker, tmp_path):
    environment, state = fake_docker
    result = null_benchmark_in_docker(environment, tmp_path / "results", no_engine="1")
    assert result.returncode == 1
    assert "no Docker engine is reachable (Cannot connect to the Docker daemon" in result.stderr
    assert "the local runtime (--runtime local, the default) needs no Docker" in result.stderr
    assert [call["args"][0] for call in calls(state)] == ["info"]  # nothing else was attempted


def test_without_a_docker_command_the_error_says_what_to_install():
    with pytest.raises(RuntimeError, match=r"no 'no-such-docker' command found; install Docker .* needs no Docker"):
        DockerRuntime(docker="no-such-docker").check_engine()


def test_a_worker_without_a_compose_service_is_named(fake_docker, tmp_path):
    environment, state = fake_docker
    result = null_benchmark_in_docker(environment, tmp_path / "results", services="keras")
    assert result.returncode == 2
    assert "worker 'null' has no service 'null' with profile 'null' in" in result.stderr
    assert "compose.yaml (found: keras)" in result.stderr


def test_a_version_without_a_gpu_lock_stops_before_any_build_with_the_command_that_makes_it(fake_docker, tmp_path):
    environment, state = fake_docker
    out = tmp_path / "results"
    result = run_harness(["benchmark", "--runtime", "docker", "--workers", "keras,keras@3.13.0", "--epochs", "1",
                          "--out", str(out), *SMALL_RUN], REPO_ROOT, environment)
    assert result.returncode == 2
    assert (f"{REPO_ROOT / 'workers' / 'keras' / 'locks' / '3.13.0-gpu.txt'}: missing: worker 'keras@3.13.0' has no gpu "
            "lock; run `harness workers lock keras@3.13.0`") in result.stderr
    assert compose_calls(state, "build") == [] and not out.exists()  # found before any image or run folder


def test_a_service_that_fails_to_start_is_torn_down_and_its_log_kept(fake_docker, tmp_path):
    environment, state = fake_docker
    out = tmp_path / "results"
    result = null_benchmark_in_docker(environment, out, up_fails="1")
    assert result.returncode == 1
    assert "starting 'null' failed" in result.stderr and "container cxrbench-keras-1 is unhealthy" in result.stderr
    assert len(compose_calls(state, "down")) == 1
    # It failed in the preflight, before a run directory was made; the container's log is kept and named.
    assert not out.exists()
    kept = Path(result.stderr.split("the workers' logs of the preflight are kept in ")[1].split()[0])
    assert "fake container log of null" in (kept / "null.log").read_text()


def test_each_worker_and_variant_has_the_compose_service_the_runtime_names():
    """The runtime's rule (service_name) and compose.yaml agree for every listed worker and variant."""
    specs = [resolve_workers(label)[0] for label in WORKER_LABELS]
    assert [service_name(spec) for spec in specs] == WORKER_IDS
    assert all(service_name(spec) in compose()["services"] for spec in specs)
    (spec,) = resolve_workers("keras[jax]@3.14.0")
    assert (service_name(spec), image_tag(spec), variable_prefix(service_name(spec))) == (
        "keras-jax", "cxrbench/keras-jax:3.14.0", "KERAS_JAX")
    assert project_name(spec).endswith("-keras-jax-3-14-0")


def test_a_keras_variant_runs_in_its_own_service_and_its_files_carry_no_bracket(fake_docker, tmp_path):
    environment, state = fake_docker
    out = tmp_path / "results"
    result = run_harness(["benchmark", "--runtime", "docker", "--workers", "keras[jax]", "--epochs", "1",
                          "--bootstrap", "0", "--out", str(out), *SMALL_RUN], REPO_ROOT,
                         {**environment, "FAKE_DOCKER_SERVICES": "keras\nkeras-jax"})
    assert result.returncode == 0, result.stderr
    compose_file = ["compose", "-f", str(REPO_ROOT / "compose.yaml")]
    assert calls(state)[2]["args"] == [*compose_file, "--profile", "keras-jax", "config", "--services"]
    (build,) = compose_calls(state, "build")
    assert build["args"][5:] == ["--profile", "keras-jax", "build", "keras-jax"] and build["args"][4].endswith("-keras-jax")
    assert build["env"]["KERAS_JAX_VERSION"] == "3.15.1"
    assert {call["args"][-1] for call in compose_calls(state, "up")} == {"keras-jax"}
    assert all(call["env"]["KERAS_JAX_PORT"].isdigit() for call in compose_calls(state, "up"))
    (run,) = out.iterdir()
    record = json.loads((run / "run.json").read_text())
    assert list(record["workers"]) == ["keras[jax]"] and record["workers"]["keras[jax]"]["image"] == "cxrbench/keras-jax:3.15.1"
    written = [path.relative_to(run).as_posix() for path in run.rglob("*")]
    assert not [path for path in written if "[" in path or "]" in path], "brackets in file names"
    for expected in ("workers/keras-jax.log", "runs/keras-jax/run.json", "logits/keras-jax/test.npy",
                     "models/keras-jax/model.safetensors", "epochs/keras-jax/run.csv"):
        assert expected in written, expected
    assert "fake container log of keras-jax" in (run / "workers" / "keras-jax.log").read_text()
    assert "| keras[jax] |" in (run / "report.md").read_text()  # the label itself in the report
