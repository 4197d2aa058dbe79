"""The local runtime: each worker a subprocess in its own environment, on a Unix socket.

The worker runs in its own process group; stopping it stops the whole group. It is also told the
harness's pid and exits if the harness dies, so no worker outlives the run that started it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from cxrbench_worker.worker_folder import WorkerFolder
from harness.runtime.base import RunningWorker
from harness.runtime.client import WorkerClient, wait_until_serving
from harness.runtime.environments import WorkerEnvironment, ensure_environment, lock_sha256
from harness.runtime.existing_python import ExistingInterpreter, inspect_interpreter
from harness.runtime.registry import WorkerSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
# The contract package and the worker SDK travel on PYTHONPATH; the environment holds only pins.
WORKER_PYTHONPATH = (REPO_ROOT / "proto", REPO_ROOT / "workers" / "common")
STARTUP_TIMEOUT_SECONDS = 180.0
WORKER_SETTINGS = ("CXRBENCH_WORKER_DIR", "CXRBENCH_WORKER_VARIANT", "CXRBENCH_ADDRESS", "CXRBENCH_TLS_CERT",
                   "CXRBENCH_TLS_KEY", "CXRBENCH_TOKEN_FILE")
STOP_GRACE_SECONDS = 5.0
# Missing environments are created this many at a time: pip unpacks and compiles on one core, so two
# builds on two cores take about half as long (4 frameworks' from a local mirror on 2 cores: 3.6 min in
# turn). Never more: torch's and TensorFlow's wheels are large, and each build writes gigabytes.
ENVIRONMENT_BUILDS_AT_ONCE = min(2, os.cpu_count() or 1)


class LocalWorker:
    """One running worker process. Use as a context manager: it is always stopped on exit."""

    def __init__(self, folder: WorkerFolder, environment: WorkerEnvironment, log_path: Path,
                 extra_env: dict[str, str] | None = None, label: str | None = None) -> None:
        self.folder = folder  # as its variant sees it (WorkerFolder.with_variant), for keras[jax]
        self.label = label or folder.label  # "keras@3.14.0" when a version was asked for
        self.environment = environment
        self.log_path = log_path
        self._extra_env = extra_env or {}
        self._socket_dir = Path(tempfile.mkdtemp(prefix="cxrbench-"))
        self.address = f"unix://{self._socket_dir / 'worker.sock'}"
        self.process: subprocess.Popen | None = None
        self.client: WorkerClient | None = None

    def command(self) -> list[str]:
        """The worker process's command line: its folder and, for a variant (keras[jax]), `--variant`."""
        return [str(self.environment.python), "-m", "cxrbench_worker", "--worker-dir", str(self.folder.path),
                "--address", self.address, "--parent-pid", str(os.getpid()),
                *(["--variant", self.folder.variant] if self.folder.variant else [])]

    def start(self) -> WorkerClient:
        """Start the process and wait until its health service says SERVING."""
        # The worker's own settings come from the command line here, never from this shell's environment
        # (a CXRBENCH_TLS_CERT set for a remote worker would otherwise turn on TLS on the local socket).
        inherited = {k: v for k, v in os.environ.items() if k not in WORKER_SETTINGS}
        env = dict(inherited, PYTHONUNBUFFERED="1", **self._extra_env)
        env["PYTHONPATH"] = os.pathsep.join(
            [*map(str, WORKER_PYTHONPATH), env.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True,  # its own process group: Ctrl-C reaches the harness, which stops it
            )
        self.client = WorkerClient(self.label, self.address, on_failure=lambda: self.exit_reason(grace=2.0))
        wait_until_serving(self.client, STARTUP_TIMEOUT_SECONDS, self.exit_reason)
        return self.client

    def exit_reason(self, grace: float = 0.0) -> str | None:
        """None while the process runs; otherwise how it ended and the end of its log.

        `grace` waits that long for a dying process: a call fails as soon as the socket closes,
        a moment before the process has finished exiting.
        """
        if self.process is None:
            return None
        try:
            self.process.wait(timeout=grace) if grace else self.process.poll()
        except subprocess.TimeoutExpired:
            pass
        if self.process.returncode is None:
            return None
        code = self.process.returncode
        how = f"was killed by signal {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        tail = self.log_path.read_text(errors="replace").strip().splitlines()[-5:] if self.log_path.exists() else []
        last = (" Last lines of its log: " + " | ".join(tail)) if tail else ""
        return f"the worker process {how}; log: {self.log_path}.{last}"

    def stop(self) -> None:
        """Stop the process group: SIGCONT (should it be stopped) and SIGTERM, then SIGKILL after a grace period."""
        if self.client is not None:
            self.client.close()
        if self.process is not None and self.process.poll() is None:
            try:
                # A stopped worker (SIGSTOP, Ctrl-Z: a stalled stream's usual suspect) handles SIGTERM only
                # once continued (the worker's main loop wakes to run the handler, whichever thread the
                # signal reached). SIGKILL, after the grace period, reaches it anyway.
                os.killpg(self.process.pid, signal.SIGCONT)
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            except ProcessLookupError:
                pass
        if self.process is not None:
            try:  # stragglers of the group (none expected), even when the leader is gone
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for leftover in self._socket_dir.glob("*"):
            leftover.unlink(missing_ok=True)
        self._socket_dir.rmdir() if self._socket_dir.exists() else None

    def __enter__(self) -> LocalWorker:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


class LocalRuntime:
    """Workers as subprocesses in cached virtual environments (no Docker, no GPU needed), or in
    interpreters the user already has (`--python NAME=PATH`)."""

    name = "local"

    def __init__(self, cache: Path, interpreters: dict[str, Path] | None = None) -> None:
        self._cache = cache
        self._interpreters = dict(interpreters or {})
        self._device: str | None = None  # None: each framework's own choice, CPU environments
        self._environments: dict[str, WorkerEnvironment] = {}
        self._existing: dict[str, ExistingInterpreter] = {}

    def use_device(self, device: str | None) -> None:
        """Run every worker on `device`: "cuda" builds the GPU environments (TensorFlow's CUDA build);
        "cpu" builds the CPU ones and hides every GPU from the workers (CUDA_VISIBLE_DEVICES empty),
        so no framework can pick one on its own. Call prepare() again afterwards."""
        if device != self._device:
            self._device = device
            self._environments.clear()

    def prepare(self, specs: list[WorkerSpec]) -> None:
        """Create every missing environment now (a minute or so each, ENVIRONMENT_BUILDS_AT_ONCE at a
        time), before any training; check every existing interpreter (`--python`) for what its worker
        needs. Every build runs to its end before the first error is raised: none is left half done."""
        with ThreadPoolExecutor(ENVIRONMENT_BUILDS_AT_ONCE, thread_name_prefix="environment") as pool:
            built = [(spec.label, pool.submit(self._environment, spec)) for spec in specs]
        for label, future in built:
            self._environments[label] = future.result()

    def _environment(self, spec: WorkerSpec) -> WorkerEnvironment:
        python = self._interpreters.get(spec.label)
        if python is None:
            return ensure_environment(spec.folder, self._cache, spec.version, gpu=self._device == "cuda")
        existing = inspect_interpreter(spec.label, spec.folder, python, spec.version)
        self._existing[spec.label] = existing
        return WorkerEnvironment(python, "existing", existing.installed_sha256)

    def close(self) -> None:
        """Nothing to release: environments stay cached for the next run."""

    def lock_sha256(self, spec: WorkerSpec) -> str:
        """The digest of the lock `spec`'s environment is built from (of what `--python`'s interpreter
        has), without building it."""
        python = self._interpreters.get(spec.label)
        if python is not None:
            return inspect_interpreter(spec.label, spec.folder, python, spec.version).installed_sha256
        return lock_sha256(spec.folder, self._cache, spec.version, gpu=self._device == "cuda")

    @contextmanager
    def start(self, spec: WorkerSpec, log_path: Path) -> Iterator[RunningWorker]:
        environment = self._environments.get(spec.label) or self._environment(spec)
        hidden = {"CUDA_VISIBLE_DEVICES": ""} if self._device == "cpu" else {}
        with LocalWorker(spec.folder, environment, log_path, extra_env=hidden, label=spec.label) as worker:
            client = worker.start()
            described: dict[str, object] = {"key": environment.key, "lock_sha256": environment.lock_sha256,
                         "python": str(environment.python)}
            existing = self._existing.get(spec.label)
            if existing is not None:  # no lock: what that interpreter had installed
                described.update(existing=True, python_version=existing.python_version,
                                 packages=existing.packages)
            yield RunningWorker(client, {"runtime": self.name, "environment": described})
