"""Preflight: before any training, every worker is started, configured as the run will configure it,
and asked where and how it runs; the run is refused unless all of them match (DESIGN invariant 9).

A comparison of a framework on a GPU with one on the CPU, or on 8 threads with one on 2, or in bf16
with one in fp32, measures the hardware and the settings, not the framework. Such a run is refused
(exit 2) with one message that names each worker's device, device model, thread count and precision,
unless `--allow-unequal` is given: then it runs and its report opens with a warning. A worker that
cannot honour the run's settings at all (a precision its framework lacks on this device, an unknown
`--option`) is refused here too, and no flag overrides that: it could not train.

`--device auto` resolves to `cuda` when this host has a CUDA device (the driver says so, no framework
needed) and every worker then sees one; when a local worker does not, every worker runs on the CPU
instead, and the reason is recorded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from cxrbench_worker.host import cuda_device_count
from harness.runtime.base import Runtime
from harness.runtime.client import WorkerError
from harness.runtime.registry import WorkerSpec
from harness.training.settings import TrainingSettings, configure_request

# How a worker refuses a setting it does not offer (worker.proto): a fact about the run's settings.
REFUSED_SETTINGS = frozenset({"UNIMPLEMENTED", "INVALID_ARGUMENT"})


class PreflightRefused(ValueError):
    """The workers would not run under equal conditions (or one cannot run at all): exit status 2."""


@dataclass(frozen=True)
class Conditions:
    """Where and how one worker runs, as it reported after Configure."""

    worker: str
    device: str  # as reported, e.g. "cuda:0 (NVIDIA H200)", "gpu:0 (NVIDIA H200)", "cpu (AMD EPYC)"
    threads: int
    precision: str  # the precision the worker says it applied ("unreported" when it says none)

    @property
    def kind(self) -> str:
        """"cuda" (PyTorch's "cuda:N", TensorFlow's "gpu:N"), "cpu", or the device's first word."""
        word = re.split(r"[:\s(]", self.device.strip(), maxsplit=1)[0].lower()
        return "cuda" if word in ("cuda", "gpu") else word or "unreported"

    @property
    def model(self) -> str:
        """The device's model: the text in its first parentheses ("NVIDIA H200", "AMD EPYC")."""
        found = re.search(r"\(([^)]*)\)", self.device)
        return found.group(1).strip() if found else self.device

    def describe(self) -> str:
        return f"{self.worker}: device {self.device}, {self.threads} threads, precision {self.precision}"


def differences(conditions: list[Conditions], device: str | None, precision: str) -> list[str]:
    """What makes the workers' conditions unequal, or differ from what the run asked; [] when none."""
    problems = [f"{c.worker} runs on {c.kind}, but --device {device} was asked" for c in conditions
                if device is not None and c.kind != device]
    problems += [f"{c.worker} applied precision {c.precision}, but --precision {precision} was asked"
                 for c in conditions if c.precision != precision]
    for attribute, what in (("kind", "device"), ("model", "device model"), ("threads", "thread count"),
                            ("precision", "precision")):
        values = {c.worker: getattr(c, attribute) for c in conditions}
        if len(set(values.values())) > 1:
            problems.append(f"the {what} differs: " + ", ".join(f"{name} {value}" for name, value in values.items()))
    return problems


@dataclass(frozen=True)
class DeviceChoice:
    """The device every worker must run on (None: whatever the remote workers report) and why."""

    device: str | None
    reason: str


def choose_device(requested: str, runtime: str) -> DeviceChoice:
    """`--device` as given, or for `auto` what this host offers (remote workers: what they report)."""
    if requested != "auto":
        return DeviceChoice(requested, f"--device {requested}")
    if runtime == "remote":
        return DeviceChoice(None, "auto: the device the remote workers report")
    if runtime == "docker":  # GPU images: whether the containers see the GPU is what they report
        return DeviceChoice(None, "auto: the device the containers report")
    count = cuda_device_count()
    if count:
        return DeviceChoice("cuda", f"auto: this host has {count} CUDA device{'s' if count > 1 else ''}")
    return DeviceChoice("cpu", "auto: no CUDA device on this host")


def inspect_workers(runtime: Runtime, workers: list[WorkerSpec], settings: Callable[[str], TrainingSettings],
                    num_labels: int, logs: Path) -> tuple[list[Conditions], list[str]]:
    """Start each worker in turn, Configure it as its first run will be, read its metadata, stop it.

    Returns the conditions of those that accepted the settings, and a refusal per worker that did not.
    """
    logs.mkdir(parents=True, exist_ok=True)
    conditions, refusals = [], []
    for spec in workers:
        log = logs / f"{spec.safe_label}.log"
        log.unlink(missing_ok=True)
        with runtime.start(spec, log) as worker:
            try:
                configured = worker.client.configure(configure_request(settings(spec.label), num_labels))
            except WorkerError as error:
                if error.code not in REFUSED_SETTINGS:
                    raise  # not a refusal of the settings (a lost connection, a token, a crash): an error
                refusals.append(f"{spec.label} cannot run these settings: {error.code}: {error.details}")
                continue
            metadata = worker.client.metadata()
            precision = configured.numerics.get("precision") or metadata.numerics.get("precision") or "unreported"
            conditions.append(Conditions(spec.label, metadata.device, metadata.threads, precision))
    return conditions, refusals


def refusal_message(conditions: list[Conditions], problems: list[str], refusals: list[str]) -> str:
    """The one message a refused run prints: each worker's conditions, then what is wrong."""
    lines = ["preflight: refusing the run before any training."]
    if conditions:
        lines += ["Each worker, as it reported after Configure:"] + [f"  {c.describe()}" for c in conditions]
    lines += [f"  {problem}" for problem in refusals + problems]
    if problems and not refusals:
        lines.append("A difference in device, threads or precision would be credited to the frameworks. Give every "
                     "worker the same conditions (--device, --threads, --precision), or run anyway with "
                     "--allow-unequal: the report then opens with a warning.")
    return "\n".join(lines)


def record(choice: DeviceChoice, conditions: list[Conditions], problems: list[str], allowed: bool) -> dict:
    """What run.json keeps of the preflight."""
    kinds = {c.kind for c in conditions}
    return {
        "device": choice.device or (kinds.pop() if len(kinds) == 1 else "mixed"),
        "device_reason": choice.reason,
        "workers": {c.worker: {**asdict(c), "kind": c.kind, "model": c.model} for c in conditions},
        "unequal": problems,
        "allowed_unequal": bool(problems) and allowed,
    }


def preflight(runtime: Runtime, workers: list[WorkerSpec], settings: Callable[[str], TrainingSettings],
              num_labels: int, logs: Path, requested_device: str, precision: str, allow_unequal: bool) -> dict:
    """Choose the device, prepare the runtime for it, check every worker; returns the record for
    run.json, or raises PreflightRefused with the message to print."""
    choice = choose_device(requested_device, runtime.name)
    runtime.use_device(choice.device)
    runtime.prepare(workers)
    conditions, refusals = inspect_workers(runtime, workers, settings, num_labels, logs)
    if requested_device == "auto" and choice.device == "cuda" and runtime.name == "local" and not refusals:
        blind = [c.worker for c in conditions if c.kind != "cuda"]
        if blind:  # auto means cuda only where every worker can use it: all on the CPU instead
            verb = "sees" if len(blind) == 1 else "see"
            choice = DeviceChoice("cpu", f"auto: {', '.join(blind)} {verb} no CUDA device, so every worker runs "
                                         "on the CPU")
            runtime.use_device("cpu")
            runtime.prepare(workers)
            conditions, refusals = inspect_workers(runtime, workers, settings, num_labels, logs)
    problems = differences(conditions, choice.device, precision)
    if refusals or (problems and not allow_unequal):
        raise PreflightRefused(refusal_message(conditions, problems, refusals))
    return record(choice, conditions, problems, allow_unequal)
