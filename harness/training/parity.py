"""Parity: evidence, measured by the harness, that every worker computes the same function.

Each worker is probed alike: the same Configure request, the same starting weights, eval-mode logits
on one fixed batch, then `steps` training steps on the same batches (the first loss comes from the
starting weights), eval-mode logits again and the trained weights. Then every worker loads the other
workers' trained weights and must reproduce their logits. The comparison is pure numpy, here, so the
tolerances are the same for every pair.

Relative differences are scaled by the larger magnitude of the two sides: for logits,
max|a - b| / max(max|a|, max|b|); for a loss, |a - b| / max(|a|, |b|).

Training from a random start is chaotic in fp32: Adam's first steps move every weight by about the
learning rate whatever the size of its gradient, so gradients that differ in their last bits (a
different summation order, a different thread count) flip signs and the trajectories part. PyTorch
against itself on 1 and on 2 threads differs by over 10% within 20 steps at lr 1e-3. So each worker
is also trained a second time from the starting weights nudged by one unit in the last place: how far
that run drifts from the worker's own is its rounding-noise envelope, and two workers may drift apart
by max(1e-2, NOISE_FACTOR x the larger envelope so far) at each step. A real difference (Adam's bias
correction, a loss definition, a BatchNorm in training) shows in the first steps, where the envelope
is still tiny.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np

from cxrbench.worker.v1 import worker_pb2
from cxrbench.worker.v1.tensors import make_batch
from cxrbench_worker.neutral_weights import weights_from_bytes, weights_to_bytes
from harness.runtime.client import WorkerClient

PARITY_STEPS = 20
PARITY_BATCH_SIZE = 16
NOISE_FACTOR = 3.0
_TINY = 1e-30


@dataclass(frozen=True)
class Tolerances:
    """The fp32 acceptance limits. `losses_relative` is the floor of the per-step allowance, which
    each worker's own rounding noise may widen (see the module's docstring)."""

    logits_relative: float = 1e-4
    first_loss_relative: float = 1e-5
    losses_relative: float = 1e-2
    loaded_logits_relative: float = 1e-4


@dataclass(frozen=True)
class ParityInputs:
    """The batches every worker sees during a probe."""

    eval_pixels: np.ndarray  # (n, H, W) uint8
    train_batches: tuple[tuple[np.ndarray, np.ndarray], ...]  # (pixels, labels) per step


@dataclass(frozen=True)
class Probe:
    """What one worker produced on the parity inputs."""

    worker: str
    trainable: int
    non_trainable: int
    initial_logits: np.ndarray
    losses: tuple[float, ...]
    trained_logits: np.ndarray
    trained_weights: bytes
    # The same steps from the starting weights nudged by one ulp: the worker's own rounding noise.
    nudged_losses: tuple[float, ...] = ()


def parity_inputs(pixels: np.ndarray, labels: np.ndarray, indices: np.ndarray, seed: int,
                  steps: int = PARITY_STEPS, batch_size: int = PARITY_BATCH_SIZE) -> ParityInputs:
    """Fixed batches drawn from `indices` (training images): one for logits, `steps` for training."""
    if steps < 1 or batch_size < 2:
        raise ValueError(f"parity needs at least 1 step and 2 images a batch (got {steps} and {batch_size})")
    rng = np.random.default_rng([seed, 0x9A817])
    order = np.resize(indices[rng.permutation(len(indices))], (steps + 1) * batch_size)
    chunks = order.reshape(steps + 1, batch_size)
    train = tuple((np.ascontiguousarray(pixels[chunk]), np.ascontiguousarray(labels[chunk])) for chunk in chunks[1:])
    return ParityInputs(np.ascontiguousarray(pixels[chunks[0]]), train)


def _logits(client: WorkerClient, pixels: np.ndarray) -> np.ndarray:
    logits, _ = client.predict(iter([make_batch(0, pixels)]))
    return logits


def nudged(start: bytes, seed: int) -> bytes:
    """The starting weights with every value moved by one unit in the last place, up or down at random."""
    rng = np.random.default_rng([seed, 0x0ED6E])
    tensors = weights_from_bytes(start)
    moved = {}
    for name in sorted(tensors):
        values = tensors[name]
        up = rng.random(values.shape) < 0.5
        moved[name] = np.where(up, np.nextafter(values, np.float32(np.inf)), np.nextafter(values, np.float32(-np.inf)))
    return weights_to_bytes(moved)


def _train(client: WorkerClient, inputs: ParityInputs) -> tuple[float, ...]:
    batches = (make_batch(i, pixels, labels) for i, (pixels, labels) in enumerate(inputs.train_batches))
    return tuple(step.loss for step in client.train(batches))


def probe(client: WorkerClient, request: worker_pb2.ConfigureRequest, start: bytes, inputs: ParityInputs,
          nudged_start: bytes | None = None) -> Probe:
    """Configure, load `start`, predict, train, predict, export; then, given `nudged_start`, train
    again from it. Leaves the worker trained: reconfigure after."""
    configured = client.configure(request)
    client.set_weights(start)
    initial = _logits(client, inputs.eval_pixels)
    losses = _train(client, inputs)
    trained = _logits(client, inputs.eval_pixels)
    weights = client.get_weights()
    noise: tuple[float, ...] = ()
    if nudged_start is not None:
        client.configure(request)
        client.set_weights(nudged_start)
        noise = _train(client, inputs)
    return Probe(client.name, configured.trainable_parameters, configured.non_trainable_parameters,
                 initial, losses, trained, weights, noise)


def _relative(x: float, y: float) -> float:
    return abs(x - y) / max(abs(x), abs(y), _TINY)


def loss_allowance(a: Probe, b: Probe, tolerance: float) -> list[float]:
    """Per step, how far the two workers' losses may drift apart: the tolerance, or NOISE_FACTOR
    times the larger of their own rounding-noise drifts so far (0 without nudged runs)."""
    envelope, allowed = 0.0, []
    for step in range(len(a.losses)):
        for own in (a, b):
            if len(own.nudged_losses) > step:
                envelope = max(envelope, _relative(own.losses[step], own.nudged_losses[step]))
        allowed.append(max(tolerance, NOISE_FACTOR * envelope))
    return allowed


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """max|a - b| scaled by the larger of the two arrays' largest magnitudes."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    scale = max(np.max(np.abs(a), initial=0.0), np.max(np.abs(b), initial=0.0), _TINY)
    return float(np.max(np.abs(a - b), initial=0.0) / scale)


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a.astype(np.float64) - b), initial=0.0))


def cross_load(client: WorkerClient, exporters: list[Probe], inputs: ParityInputs,
               tolerances: Tolerances = Tolerances()) -> list[dict]:
    """Load each exporter's trained weights into `client`; its logits must match the exporter's."""
    rows = []
    for exporter in exporters:
        if exporter.worker == client.name:
            continue
        client.set_weights(exporter.trained_weights)
        logits = _logits(client, inputs.eval_pixels)
        difference = relative_difference(logits, exporter.trained_logits)
        rows.append({"exporter": exporter.worker, "importer": client.name, "logits_relative": difference,
                     "ok": difference <= tolerances.loaded_logits_relative})
    return rows


def compare(probes: list[Probe], expected_counts: tuple[int, int], cross_rows: list[dict],
            tolerances: Tolerances = Tolerances()) -> dict:
    """The parity summary (plain values): counts per worker, every pair, cross-loads, passed or not."""
    counts = [{"worker": p.worker, "trainable": p.trainable, "non_trainable": p.non_trainable,
               "ok": (p.trainable, p.non_trainable) == expected_counts} for p in probes]
    pairs = []
    for a, b in itertools.combinations(probes, 2):
        first = _relative(a.losses[0], b.losses[0])
        # strict=False: a worker that returned too few or too many losses fails on same_length below.
        steps = [_relative(x, y) for x, y in zip(a.losses, b.losses, strict=False)]
        allowed = loss_allowance(a, b, tolerances.losses_relative)
        same_length = len(a.losses) == len(b.losses)
        worst = max(steps) if same_length else float("inf")
        losses_ok = same_length and all(d <= limit for d, limit in zip(steps, allowed, strict=True))
        logits = relative_difference(a.initial_logits, b.initial_logits)
        pairs.append({
            "workers": [a.worker, b.worker],
            "logits_max_abs": _max_abs(a.initial_logits, b.initial_logits),
            "logits_relative": logits,
            "first_loss_relative": first,
            "losses_relative_max": worst,
            "losses_allowed_max": max(allowed) if allowed else tolerances.losses_relative,
            "losses_relative": steps,
            "losses_allowed": allowed,
            "trained_logits_relative": relative_difference(a.trained_logits, b.trained_logits),
            "ok": logits <= tolerances.logits_relative and first <= tolerances.first_loss_relative and losses_ok,
        })
    return {
        "steps": len(probes[0].losses) if probes else 0,
        "expected_counts": {"trainable": expected_counts[0], "non_trainable": expected_counts[1]},
        "tolerances": asdict(tolerances),
        "counts": counts,
        "pairs": pairs,
        "cross_loads": cross_rows,
        "losses": {p.worker: list(p.losses) for p in probes},
        "nudged_losses": {p.worker: list(p.nudged_losses) for p in probes},
        # strict=False: without a nudged run nudged_losses is empty, and the noise is unknown (None).
        "own_noise_max": {
            p.worker: max((_relative(x, y) for x, y in zip(p.losses, p.nudged_losses, strict=False)), default=None)
            for p in probes
        },
        "noise_factor": NOISE_FACTOR,
        "passed": all(row["ok"] for row in counts + pairs + cross_rows),
    }
