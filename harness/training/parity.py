"""Parity: evidence, measured by the harness, that every worker computes the same function.

Each worker is probed alike: the same Configure request, the same starting weights, eval-mode logits
on one fixed batch, then `steps` training steps on the same batches (the first loss comes from the
starting weights), eval-mode logits again and the trained weights. Then every worker loads the other
workers' trained weights and must reproduce their logits. The eval batch's final feature maps from the
starting weights, and the CAMs computed from them, are compared too (feature_parity.py). The
comparison is pure numpy, here, so the tolerances are the same for every pair.

Relative differences are scaled by the larger magnitude of the two sides (differences.py): for logits,
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

Mixed precision (bf16-mixed, fp16-mixed). Two correct implementations of the recipe
(cxrbench_worker.mixed_precision) are not bit-equal: each rounds to the compute dtype in places of
its own kernels' choosing. What they share is the fp32 function f, which fp32 parity proves equal
across workers. So each worker is also run in fp32 from the same starting weights on the same
batches (its *reference* run, in place of the nudged run), and its own deviation d (logits, first
loss, each step's loss) is measured against that. By the triangle inequality
|a - b| <= d_a + d_b + |f_a - f_b| <= 2 max(d_a, d_b) + (fp32 parity's 1e-4), so two workers may
differ by NOISE_FACTOR x the larger own deviation (3 rather than 2: the relative differences are
scaled by each side's own largest value, and the cross-loads compare trained weights whose deviation
was measured at the start), never less than a floor. The fp32 reference runs themselves are compared
too, under fp32's limits (eval logits 1e-4, first loss 1e-5): whatever both precisions share, a loss
defined otherwise say, fails there at fp32's strictness.

That allowance alone would excuse a worker whose low-precision path is wrong (a loss or a BatchNorm
computed in bfloat16 widens its own d as much as it likes). So each worker's own deviation must
itself stay under a ceiling. Both are set from the compute dtype's unit roundoff u (bfloat16: 8
significant bits, u = 2^-8 = 3.9e-3; float16: 11 bits, u = 2^-11 = 4.9e-4):
- floors: the logits leave the head rounded to the compute dtype, a relative error up to u in each
  worker, so two workers can differ by 2u whatever else they agree on; the first loss (float32
  BCE of such logits, |dL/dz| < 1) moves by at most about u relative.
- ceilings: ResNet-50 rounds each activation about 50 times on its way to the logits, and eval-mode
  logits from the starting weights (running statistics 0 and 1: no normalisation) carry an early
  error through every block. Measured with `harness parity --precision bf16-mixed` on this project's
  CPU (ResNet-50, 48 px, 16 images, seed 0), each worker against its own fp32 run: eval logits
  PyTorch 1.31e-2, TensorFlow 1.29e-2, Keras 1.29e-2 (3.3-3.4 u); first loss 8.59e-3 / 8.76e-3 /
  6.76e-3 (1.7-2.2 u). The ceilings are about three times the largest, rounded up to a power of two
  times u: 16 u (logits) and 8 u (first loss). What they cannot see is an error of the low-precision
  path alone that stays under them: they bound how far a worker may stray from its own fp32 run, not
  where it rounds. The same multiples of float16's u are fp16-mixed's limits (not measured here).
Much of the rounding is common to every worker (the same float32 inputs and weights round to the
same bfloat16 values), so pairs differ by less than their own deviations: measured, eval logits
1.0e-2 (PyTorch against TensorFlow and Keras; TensorFlow and Keras bit-equal), first loss 1.6e-4
to 2.0e-3.
The step losses keep fp32's floor, 1e-2: after the first steps the bf16 and fp32 runs part as fp32
runs nudged by one ulp do, only sooner.
Feature maps (and their CAMs) have the logits' limits: fp32 1e-4; in mixed precision a floor of 2u
(each worker rounds them to the compute dtype) widened by NOISE_FACTOR x the larger own deviation
from the fp32 run, that deviation under a ceiling of 16u, and the fp32 reference runs' maps within 1e-4.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np

from cxrbench.worker.v1 import worker_pb2
from cxrbench.worker.v1.tensors import make_batch
from cxrbench_worker.neutral_weights import weights_from_bytes, weights_to_bytes
from harness.runtime.client import WorkerClient
from harness.training.differences import max_abs_difference, relative, relative_difference  # the last re-exported
from harness.training.feature_parity import feature_map_row, feature_maps, starting_cams

PARITY_STEPS = 20
PARITY_BATCH_SIZE = 16
NOISE_FACTOR = 3.0


#: Unit roundoff of each precision's compute dtype: 2^-(significant bits).
UNIT_ROUNDOFF = {"fp32": 2.0**-24, "bf16-mixed": 2.0**-8, "fp16-mixed": 2.0**-11}


@dataclass(frozen=True)
class Tolerances:
    """The acceptance limits of one precision (the defaults are fp32's). The pair limits are floors
    that each worker's own deviation may widen: its nudged run's in fp32 (losses), its fp32 reference
    run's in mixed precision (logits and losses); the `own_*` ceilings bound that deviation itself and
    exist for mixed precision only (see the module's docstring)."""

    logits_relative: float = 1e-4
    first_loss_relative: float = 1e-5
    losses_relative: float = 1e-2
    loaded_logits_relative: float = 1e-4
    own_logits_relative: float | None = None
    own_first_loss_relative: float | None = None
    # Final feature maps and their CAMs, pair limit and own ceiling (feature_parity.py).
    features_relative: float = 1e-4
    own_features_relative: float | None = None

    @classmethod
    def for_precision(cls, precision: str) -> Tolerances:
        """fp32's limits, or the mixed-precision ones derived from the compute dtype's unit roundoff."""
        if precision not in UNIT_ROUNDOFF:
            raise ValueError(f"precision: unknown {precision!r} (known: {', '.join(UNIT_ROUNDOFF)})")
        if precision == "fp32":
            return cls()
        u = UNIT_ROUNDOFF[precision]
        return cls(logits_relative=2 * u, first_loss_relative=u, losses_relative=1e-2, loaded_logits_relative=2 * u,
                   own_logits_relative=16 * u, own_first_loss_relative=8 * u, features_relative=2 * u,
                   own_features_relative=16 * u)


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
    precision: str = "fp32"
    # Mixed precision: the same worker in fp32 from the same start (eval logits, losses of the steps).
    reference_logits: np.ndarray | None = None
    reference_losses: tuple[float, ...] = ()
    # Eval-mode final feature maps (N, C, h, w) from the starting weights, the CAMs computed from them
    # and the starting head; in mixed precision the fp32 reference run's maps too.
    initial_features: np.ndarray | None = None
    initial_cams: np.ndarray | None = None
    reference_features: np.ndarray | None = None

    @property
    def own_losses(self) -> tuple[float, ...]:
        """The run that measures this worker's own noise: the fp32 reference, else the nudged run."""
        return self.reference_losses or self.nudged_losses

    @property
    def own_logits_deviation(self) -> float:
        """Its eval logits against its own fp32 reference's; 0 in fp32 (no reference)."""
        if self.reference_logits is None:
            return 0.0
        return relative_difference(self.initial_logits, self.reference_logits)

    @property
    def own_first_loss_deviation(self) -> float:
        """Its first loss against its own fp32 reference's; 0 in fp32 (no reference)."""
        if not self.reference_losses or not self.losses:
            return 0.0
        return relative(self.losses[0], self.reference_losses[0])

    @property
    def own_features_deviation(self) -> float:
        """Its feature maps against its own fp32 reference's; 0 in fp32 (no reference)."""
        if self.initial_features is None or self.reference_features is None:
            return 0.0
        return relative_difference(self.initial_features, self.reference_features)


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
    """Configure, load `start`, predict (logits, feature maps), train, predict, export, and measure the
    worker's own noise: in mixed precision its fp32 reference run from `start` comes first (eval logits,
    feature maps and the same steps); in fp32, given `nudged_start`, it trains again from that. Always
    deterministic, whatever `request` says: parity compares numbers, not speed. Leaves the worker
    trained, configured as `request` asks (so cross-loads run in the probed precision)."""
    request = _deterministic(request)
    precision = request.numerics.precision or "fp32"
    reference_logits: np.ndarray | None = None
    reference_features: np.ndarray | None = None
    reference_losses: tuple[float, ...] = ()
    if precision != "fp32":
        fp32 = worker_pb2.ConfigureRequest()
        fp32.CopyFrom(request)
        fp32.numerics.precision = "fp32"
        client.configure(fp32)
        client.set_weights(start)
        reference_logits = _logits(client, inputs.eval_pixels)
        reference_features = feature_maps(client, inputs.eval_pixels)
        reference_losses = _train(client, inputs)
    configured = client.configure(request)
    client.set_weights(start)
    initial = _logits(client, inputs.eval_pixels)
    features = feature_maps(client, inputs.eval_pixels)
    losses = _train(client, inputs)
    trained = _logits(client, inputs.eval_pixels)
    weights = client.get_weights()
    noise: tuple[float, ...] = ()
    if precision == "fp32" and nudged_start is not None:
        client.configure(request)
        client.set_weights(nudged_start)
        noise = _train(client, inputs)
    return Probe(client.name, configured.trainable_parameters, configured.non_trainable_parameters,
                 initial, losses, trained, weights, noise, precision, reference_logits, reference_losses,
                 features, starting_cams(features, start, request.architecture, request.num_labels),
                 reference_features)


def _deterministic(request: worker_pb2.ConfigureRequest) -> worker_pb2.ConfigureRequest:
    copy = worker_pb2.ConfigureRequest()
    copy.CopyFrom(request)
    copy.numerics.deterministic = True
    return copy


def loss_allowance(a: Probe, b: Probe, tolerance: float) -> list[float]:
    """Per step, how far the two workers' losses may drift apart: the tolerance, or NOISE_FACTOR
    times the larger of their own rounding-noise drifts so far (0 without nudged runs)."""
    envelope, allowed = 0.0, []
    for step in range(len(a.losses)):
        for own in (a, b):
            if len(own.own_losses) > step and len(own.losses) > step:
                envelope = max(envelope, relative(own.losses[step], own.own_losses[step]))
        allowed.append(max(tolerance, NOISE_FACTOR * envelope))
    return allowed


def cross_load(client: WorkerClient, exporters: list[Probe], inputs: ParityInputs,
               tolerances: Tolerances | None = None) -> list[dict]:
    """Load each exporter's trained weights into `client`; its logits must match the exporter's,
    within the loaded-logits limit of the probes' precision (widened in mixed precision by the larger
    own logits deviation of exporter and importer). `client` runs as its own probe left it."""
    own = {p.worker: p.own_logits_deviation for p in exporters}
    rows = []
    for exporter in exporters:
        if exporter.worker == client.name:
            continue
        limits = tolerances or Tolerances.for_precision(exporter.precision)
        client.set_weights(exporter.trained_weights)
        logits = _logits(client, inputs.eval_pixels)
        difference = relative_difference(logits, exporter.trained_logits)
        allowed = max(limits.loaded_logits_relative,
                      NOISE_FACTOR * max(own[exporter.worker], own.get(client.name, 0.0)))
        rows.append({"exporter": exporter.worker, "importer": client.name, "logits_relative": difference,
                     "allowed": allowed, "ok": difference <= allowed})
    return rows


def own_deviations(probe: Probe, tolerances: Tolerances) -> dict:
    """A mixed-precision worker against its own fp32 reference run: logits, first loss, feature maps,
    and whether each stays under the precision's ceiling."""
    logits, first, features = probe.own_logits_deviation, probe.own_first_loss_deviation, probe.own_features_deviation
    ok = all(ceiling is None or value <= ceiling for value, ceiling in (
        (logits, tolerances.own_logits_relative), (first, tolerances.own_first_loss_relative),
        (features, tolerances.own_features_relative)))
    return {"worker": probe.worker, "logits_relative": logits, "first_loss_relative": first,
            "features_relative": features, "ok": ok}


def _reference_pair(a: Probe, b: Probe) -> dict:
    """Mixed precision: the two workers' fp32 reference runs against fp32's own limits (eval logits,
    first loss). A difference both precisions share (a loss defined otherwise, say) fails here at
    fp32's strictness, however wide the low-precision allowance. Empty in fp32."""
    if a.reference_logits is None or b.reference_logits is None or not a.reference_losses or not b.reference_losses:
        return {}
    fp32 = Tolerances()
    logits = relative_difference(a.reference_logits, b.reference_logits)
    first = relative(a.reference_losses[0], b.reference_losses[0])
    return {"reference_logits_relative": logits, "reference_first_loss_relative": first,
            "reference_ok": logits <= fp32.logits_relative and first <= fp32.first_loss_relative}


def _feature_maps_pair(a: Probe, b: Probe, tolerances: Tolerances) -> dict | None:
    """The two workers' final feature maps and CAMs (feature_parity.py); None when either has none."""
    if a.initial_features is None or b.initial_features is None or a.initial_cams is None or b.initial_cams is None:
        return None
    allowed = max(tolerances.features_relative, NOISE_FACTOR * max(a.own_features_deviation, b.own_features_deviation))
    reference = None
    if a.reference_features is not None and b.reference_features is not None:
        reference = (a.reference_features, b.reference_features, Tolerances().features_relative)
    return feature_map_row([a.worker, b.worker], (a.initial_features, b.initial_features),
                           (a.initial_cams, b.initial_cams), allowed, reference)


def compare(probes: list[Probe], expected_counts: tuple[int, int], cross_rows: list[dict],
            tolerances: Tolerances | None = None) -> dict:
    """The parity summary (plain values): counts per worker, every pair, cross-loads, passed or not.

    The limits are those of the probes' precision unless `tolerances` is given; every probe must have
    run the same precision (ValueError otherwise)."""
    precisions = sorted({p.precision for p in probes}) or ["fp32"]
    if len(precisions) > 1:
        raise ValueError(f"precision: the probes ran {', '.join(precisions)}; parity compares one precision")
    precision = precisions[0]
    tolerances = tolerances or Tolerances.for_precision(precision)
    counts = [{"worker": p.worker, "trainable": p.trainable, "non_trainable": p.non_trainable,
               "ok": (p.trainable, p.non_trainable) == expected_counts} for p in probes]
    own = [own_deviations(p, tolerances) for p in probes] if precision != "fp32" else []
    feature_rows = [row for a, b in itertools.combinations(probes, 2)
                    if (row := _feature_maps_pair(a, b, tolerances)) is not None]
    pairs = []
    for a, b in itertools.combinations(probes, 2):
        first = relative(a.losses[0], b.losses[0])
        # strict=False: a worker that returned too few or too many losses fails on same_length below.
        steps = [relative(x, y) for x, y in zip(a.losses, b.losses, strict=False)]
        allowed = loss_allowance(a, b, tolerances.losses_relative)
        same_length = len(a.losses) == len(b.losses)
        worst = max(steps) if same_length else float("inf")
        losses_ok = same_length and all(d <= limit for d, limit in zip(steps, allowed, strict=True))
        logits = relative_difference(a.initial_logits, b.initial_logits)
        # fp32: own deviations are 0, so these are fp32's fixed limits.
        logits_allowed = max(tolerances.logits_relative,
                             NOISE_FACTOR * max(a.own_logits_deviation, b.own_logits_deviation))
        first_allowed = max(tolerances.first_loss_relative,
                            NOISE_FACTOR * max(a.own_first_loss_deviation, b.own_first_loss_deviation))
        reference = _reference_pair(a, b)
        pairs.append({
            "workers": [a.worker, b.worker],
            "logits_max_abs": max_abs_difference(a.initial_logits, b.initial_logits),
            "logits_relative": logits,
            "logits_allowed": logits_allowed,
            "first_loss_relative": first,
            "first_loss_allowed": first_allowed,
            "losses_relative_max": worst,
            "losses_allowed_max": max(allowed) if allowed else tolerances.losses_relative,
            "losses_relative": steps,
            "losses_allowed": allowed,
            "trained_logits_relative": relative_difference(a.trained_logits, b.trained_logits),
            **reference,
            "ok": (logits <= logits_allowed and first <= first_allowed and losses_ok
                   and reference.get("reference_ok", True)),
        })
    return {
        "precision": precision,
        "steps": len(probes[0].losses) if probes else 0,
        "expected_counts": {"trainable": expected_counts[0], "non_trainable": expected_counts[1]},
        "tolerances": asdict(tolerances),
        # Mixed precision: the limits the fp32 reference runs are held to.
        "reference_tolerances": asdict(Tolerances()) if precision != "fp32" else None,
        "counts": counts,
        "own_deviations": own,
        "pairs": pairs,
        "cross_loads": cross_rows,
        "feature_maps": feature_rows,
        "losses": {p.worker: list(p.losses) for p in probes},
        "nudged_losses": {p.worker: list(p.nudged_losses) for p in probes},
        "reference_losses": {p.worker: list(p.reference_losses) for p in probes if p.reference_losses},
        # strict=False: without a nudged or reference run there is nothing to compare: unknown (None).
        "own_noise_max": {
            p.worker: max((relative(x, y) for x, y in zip(p.losses, p.own_losses, strict=False)), default=None)
            for p in probes
        },
        "noise_factor": NOISE_FACTOR,
        "passed": all(row["ok"] for row in counts + own + pairs + feature_rows + cross_rows),
    }
