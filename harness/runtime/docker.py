"""The docker runtime: each worker a `compose.yaml` service in its own GPU container, one at a time.

Before the run: the engine and the compose plugin are checked, each worker must have a service
and a current GPU lock (what its image installs), a fresh TLS certificate and token are written for
this run (compose secrets), and every missing image is built (`cxrbench/<service>:<framework
version>`, from the one recipe workers/Dockerfile). Then, per worker, in turn:
`docker compose -p <project> --profile <service> up -d --wait <service>` (so the container is healthy),
the run, the container's log saved beside the others, and `down`. Versions side by side
(`keras@3.14.0,keras@3.15.1`) are separate images and separate compose projects. A worker's service
is named after it, a variant's after its safe label (`keras-jax` for keras[jax]): compose names allow
no brackets.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cxrbench_worker.locks import current_lock_text
from cxrbench_worker.worker_labels import safe_label, worker_label
from harness.runtime.base import RunningWorker
from harness.runtime.client import ChannelSecurity, WorkerClient, wait_until_serving
from harness.runtime.credentials import Credentials, make_credentials
from harness.runtime.registry import WorkerSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "compose.yaml"
UP_TIMEOUT_SECONDS = 600  # importing a framework and initialising CUDA can take minutes
CONNECT_TIMEOUT_SECONDS = 60.0
NO_DOCKER = "the local runtime (--runtime local, the default) needs no Docker"


def variable_prefix(service: str) -> str:
    """KERAS for keras, KERAS_JAX for keras-jax: compose.yaml reads KERAS_JAX_VERSION and KERAS_JAX_PORT."""
    return re.sub(r"[^A-Z0-9]", "_", service.upper())


def service_name(spec: WorkerSpec) -> str:
    """The compose service (and its profile) of this worker: "keras", "keras-jax" for keras[jax]."""
    return safe_label(worker_label(spec.name, spec.variant))


def image_tag(spec: WorkerSpec) -> str:
    """The image compose.yaml names for this worker and version: cxrbench/keras:3.14.0, cxrbench/keras-jax:3.15.1."""
    return f"cxrbench/{service_name(spec)}:{spec.framework_version or 'latest'}"


def project_name(spec: WorkerSpec) -> str:
    """A compose project per worker and version (and per harness process), so nothing collides."""
    return f"cxrbench-{os.getpid()}-" + re.sub(r"[^a-z0-9_-]", "-", spec.safe_label.lower())


def free_port() -> int:
    """A port free on 127.0.0.1 now, for the container's published port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DockerRuntime:
    """Workers as compose services; needs a Docker engine with the compose plugin (and for GPUs
    the NVIDIA Container Toolkit)."""

    name = "docker"

    def __init__(
        self, compose_file: Path = COMPOSE_FILE, docker: str = "docker", secrets_root: Path | None = None
    ) -> None:
        """`secrets_root`: where each run's credentials folder is made (default: the system's temp
        folder; the harness passes its cache, since Docker installed as a snap cannot mount /tmp)."""
        self.compose_file = compose_file
        self.docker = docker
        self.secrets_root = secrets_root
        self._secrets_folder: Path | None = None
        self._credentials: Credentials | None = None

    def _call(self, arguments: list[str], environment: dict[str, str] | None = None,
              capture: bool = True) -> subprocess.CompletedProcess:
        """Run docker with compose.yaml's variables added to this environment; never raises on its exit code."""
        return subprocess.run([self.docker, *arguments], env={**os.environ, **(environment or {})}, text=True,
                              capture_output=capture, stdin=subprocess.DEVNULL)

    def _run(self, arguments: list[str], what: str, environment: dict[str, str] | None = None,
             capture: bool = True) -> subprocess.CompletedProcess:
        """Run docker; RuntimeError naming `what` and the command's last words when it fails."""
        result = self._call(arguments, environment, capture)
        if result.returncode != 0:
            said = ((result.stderr or "") + (result.stdout or "")).strip()[-1500:] if capture else "see above"
            raise RuntimeError(f"--runtime docker: {what} failed (exit {result.returncode}: "
                               f"{' '.join([self.docker, *arguments])}): {said}")
        return result

    def _compose(self, spec: WorkerSpec, *arguments: str) -> list[str]:
        return ["compose", "-f", str(self.compose_file), "-p", project_name(spec), "--profile", service_name(spec),
                *arguments]

    def _environment(self, spec: WorkerSpec, port: int | None = None) -> dict[str, str]:
        """What compose.yaml reads: the version (image tag, build arg), the published port, the secrets."""
        assert self._secrets_folder is not None
        prefix = variable_prefix(service_name(spec))
        environment = {"CXRBENCH_SECRETS": str(self._secrets_folder)}
        if spec.framework_version:
            environment[f"{prefix}_VERSION"] = spec.framework_version
        if port is not None:
            environment[f"{prefix}_PORT"] = str(port)
        return environment

    def check_engine(self) -> None:
        """RuntimeError saying what is missing: the docker command, a reachable engine, compose."""
        if shutil.which(self.docker) is None:
            raise RuntimeError(f"--runtime docker: no '{self.docker}' command found; install Docker with its compose "
                               f"plugin, or run without --runtime docker: {NO_DOCKER}")
        info = self._call(["info", "--format", "{{.ServerVersion}}"])
        if info.returncode != 0 or not info.stdout.strip():
            said = (info.stderr or info.stdout).strip().splitlines()
            raise RuntimeError("--runtime docker: no Docker engine is reachable "
                               f"({said[-1] if said else 'docker info failed'}); "
                               f"start the engine (or set DOCKER_HOST), or run without --runtime docker: {NO_DOCKER}")
        self._run(["compose", "version"], "checking for the compose plugin ('docker compose version')")

    def services(self, profiles: list[str]) -> list[str]:
        """The services compose.yaml defines under these profiles (each worker's profile is its name)."""
        enabled = [part for profile in dict.fromkeys(profiles) for part in ("--profile", profile)]
        listed = self._run(["compose", "-f", str(self.compose_file), *enabled, "config", "--services"],
                           f"reading {self.compose_file}", {"CXRBENCH_SECRETS": str(self._secrets_folder or ".")})
        return [line.strip() for line in listed.stdout.splitlines() if line.strip()]

    def image_id(self, tag: str) -> str | None:
        """The local image's id, or None when it has not been built."""
        found = self._call(["image", "inspect", "--format", "{{.Id}}", tag])
        return found.stdout.strip() if found.returncode == 0 and found.stdout.strip() else None

    def use_device(self, device: str | None) -> None:
        """The images are GPU images (compose.yaml reserves a GPU per service): `cpu` is refused."""
        if device == "cpu":
            raise ValueError("--device cpu: the docker runtime runs the GPU images; use --runtime local for the CPU")

    def prepare(self, specs: list[WorkerSpec]) -> None:
        """Check the engine and compose.yaml, write this run's credentials, build missing images."""
        self.check_engine()
        if self.secrets_root is not None:
            self.secrets_root.mkdir(parents=True, exist_ok=True)
        self._secrets_folder = Path(tempfile.mkdtemp(prefix="run-", dir=self.secrets_root))
        self._credentials = make_credentials(self._secrets_folder)
        services = self.services([service_name(spec) for spec in specs])
        for spec in specs:
            service = service_name(spec)
            if service not in services:
                raise ValueError(f"--runtime docker: worker '{spec.label}' has no service '{service}' with profile "
                                 f"'{service}' in {self.compose_file} (found: {', '.join(services) or 'none'})")
            if spec.folder.requirements is not None:
                # The image installs this lock (workers/Dockerfile): a missing or stale one is found
                # here, with the command that renews it, not minutes into a build.
                current_lock_text(spec.folder, spec.version, gpu=True)
        for spec in specs:
            tag = image_tag(spec)
            if self.image_id(tag) is None:
                print(f"building {tag} (docker compose build {service_name(spec)}; the first build takes minutes)...",
                      flush=True)
                self._run(self._compose(spec, "build", service_name(spec)), f"building the image of '{spec.label}'",
                          self._environment(spec), capture=False)

    @contextmanager
    def start(self, spec: WorkerSpec, log_path: Path) -> Iterator[RunningWorker]:
        assert self._credentials is not None, "prepare() first"
        port = free_port()
        environment = self._environment(spec, port)
        client: WorkerClient | None = None
        try:
            self._run(self._compose(spec, "up", "-d", "--wait", "--wait-timeout", str(UP_TIMEOUT_SECONDS),
                                    service_name(spec)),
                      f"starting '{spec.label}'", environment)
            security = ChannelSecurity(tls=True, root_certificates=self._credentials.certificate.read_bytes(),
                                       token=self._credentials.token.read_text().strip(), server_name="localhost")
            client = WorkerClient(spec.label, f"127.0.0.1:{port}", security=security)
            wait_until_serving(client, CONNECT_TIMEOUT_SECONDS, lambda: None)
            tag = image_tag(spec)
            yield RunningWorker(client, {"runtime": self.name, "image": tag, "image_id": self.image_id(tag),
                                         "compose_project": project_name(spec)})
        finally:
            if client is not None:
                client.close()
            self._save_log(spec, environment, log_path)
            self._stop(spec, environment)

    def _stop(self, spec: WorkerSpec, environment: dict[str, str]) -> None:
        """`compose down`; a failure is printed, never raised over the run's own error."""
        arguments = self._compose(spec, "down", "--remove-orphans", "--timeout", "10")
        stopped = self._call(arguments, environment)
        if stopped.returncode != 0:
            print(f"warning: could not stop '{spec.label}' (docker {' '.join(arguments)}): "
                  f"{stopped.stderr.strip()[-500:]}", flush=True)

    def _save_log(self, spec: WorkerSpec, environment: dict[str, str], log_path: Path) -> None:
        logs = self._call(self._compose(spec, "logs", "--no-color", service_name(spec)), environment)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as log:
            log.write(logs.stdout + logs.stderr)

    def close(self) -> None:
        """Remove this run's credentials."""
        if self._secrets_folder is not None:
            shutil.rmtree(self._secrets_folder, ignore_errors=True)
            self._secrets_folder = None
