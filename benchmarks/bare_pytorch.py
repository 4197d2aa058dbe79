"""The PyTorch worker's training step without the harness: what the same GPU does with no gRPC around it.

`bin/gpu-check` divides the PyTorch worker's throughput through the harness by this loop's, in the same
interpreter, to show what the harness costs. So the loop does what the worker does per step
(workers/pytorch/cxrbench_pytorch/trainer.py) and nothing more: torchvision's ResNet-50 with a
14-logit head, Adam (3e-4, betas 0.9/0.999, eps 1e-8), BCE-with-logits on float32 logits, the
forward pass under autocast (bf16, or fp16 with a GradScaler) for the mixed precisions, TF32 off;
cuDNN autotuning on and deterministic algorithms off, as the harness's timed runs have them
(`--deterministic` turns both around, as the harness's flag does); uint8 grayscale batches copied to
the device each step, then expanded to 3 channels and normalised with ImageNet's statistics there.

The host batches are drawn once into a pool of distinct arrays and each step copies its batch out of
the pool into a fresh host array before the device copy: the worker pays the same two copies (the
decoded request bytes are read-only and copied, then sent to the device), while the random numbers
are not timed here, as the worker does not draw them either (the harness builds batches in its own
process). The worker's NCHW layout is kept (no channels_last), so the ratio shows the harness's cost,
not a tuning the worker lacks. The worker also reads each step's loss (one more device
synchronisation per step, which the contract needs); the loop reads it once, at the end.

Warm-up steps (cuDNN autotuning, allocator growth) are left out; the timed steps are bracketed by
device synchronisations. Prints one JSON line: images per second, the device's peak memory over the
whole loop, warm-up included (torch's max_memory_allocated: the figure the worker reports over its
run) and the settings.

    python benchmarks/bare_pytorch.py --device cuda --precision bf16-mixed --image-size 224 --batch-size 128
    python benchmarks/bare_pytorch.py --device cpu --image-size 32 --batch-size 4 --warmup 1 --steps 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import sys
import time

import numpy as np

PRECISIONS = ("fp32", "bf16-mixed", "fp16-mixed")
NUM_LABELS = 14
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; sizes below their minimum are refused with the flag's name."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--precision", choices=PRECISIONS, default="bf16-mixed")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (default 10)")
    parser.add_argument("--steps", type=int, default=40, help="timed steps (default 40)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads; 0: torch's default")
    parser.add_argument("--pool", type=int, default=8, help="distinct host batches cycled through (default 8)")
    parser.add_argument("--deterministic", action="store_true",
                        help="deterministic algorithms, no cuDNN autotuning (as the harness's --deterministic)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for flag, value, low in (("--image-size", args.image_size, 32), ("--batch-size", args.batch_size, 2),
                             ("--warmup", args.warmup, 0), ("--steps", args.steps, 1), ("--threads", args.threads, 0),
                             ("--pool", args.pool, 1)):
        if value < low:
            parser.error(f"{flag}: {value} must be at least {low}")
    return args


def host_batches(count: int, batch_size: int, image_size: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` distinct (uint8 pixels N x H x W, uint8 labels N x 14) batches, as the harness sends them."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (batch_size, image_size, image_size), dtype=np.uint8),
             (rng.random((batch_size, NUM_LABELS)) < 0.3).astype(np.uint8)) for _ in range(count)]


def train(args: argparse.Namespace) -> dict:
    """Build, warm up and time the loop; returns the figures (plain values)."""
    import torch
    import torch.nn.functional as F
    import torchvision

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bare_pytorch: --device cuda: torch sees no CUDA device "
                         f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    torch.use_deterministic_algorithms(args.deterministic)
    torch.backends.cudnn.deterministic = args.deterministic
    torch.backends.cudnn.benchmark = not args.deterministic
    torch.manual_seed(args.seed)

    model = torchvision.models.resnet50(weights=None, num_classes=NUM_LABELS).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    low = {"bf16-mixed": torch.bfloat16, "fp16-mixed": torch.float16}.get(args.precision)
    # The scaler's start and growth interval do not change a step's cost, so torch's defaults do here.
    scaler = torch.amp.GradScaler(device.type) if args.precision == "fp16-mixed" else None
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    pool = host_batches(args.pool, args.batch_size, args.image_size, args.seed)
    model.train()

    def step(number: int) -> torch.Tensor:
        pixels, labels = (np.array(part, order="C") for part in pool[number % len(pool)])  # a fresh host copy
        x = torch.from_numpy(pixels).to(device).to(torch.float32).div_(255.0).unsqueeze(1).expand(-1, 3, -1, -1)
        x = (x - mean) / std
        y = torch.from_numpy(labels).to(device).to(torch.float32)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=low) if low is not None else contextlib.nullcontext():
            logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        return loss.detach()

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    warm_start = time.perf_counter()
    for number in range(args.warmup):
        step(number)
    synchronize()
    warmup_seconds = time.perf_counter() - warm_start
    start = time.perf_counter()
    for number in range(args.warmup, args.warmup + args.steps):
        loss = step(number)
    synchronize()
    seconds = time.perf_counter() - start
    final_loss = float(loss.item())

    if device.type == "cuda":
        name = f"cuda:{torch.cuda.current_device()} ({torch.cuda.get_device_name(device)})"
        peak: int | None = int(torch.cuda.max_memory_allocated(device))
    else:
        name, peak = f"cpu ({platform.processor() or platform.machine()})", None
    # ru_maxrss is in KiB on Linux.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "images_per_second": args.steps * args.batch_size / seconds,
        "seconds": seconds,
        "steps": args.steps,
        "warmup_steps": args.warmup,
        "warmup_seconds": warmup_seconds,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "precision": args.precision,
        "deterministic": args.deterministic,
        "threads": torch.get_num_threads(),
        "device": name,
        "device_peak_bytes": peak,
        "peak_rss_bytes": rss,
        "final_loss": final_loss,
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                     "cuda": str(torch.version.cuda), "python": platform.python_version()},
    }


def main(argv: list[str] | None = None) -> int:
    """Run the loop and print its figures as one JSON line on stdout."""
    print(json.dumps(train(parse_arguments(argv))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
