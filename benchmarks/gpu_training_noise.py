"""Training noise of the default recipe on a GPU: many seeds, bare PyTorch, no harness.

What a 2-core CPU cannot afford: 20 or more training seeds of the default benchmark recipe, to see
the shape of the run-to-run spread (normal, or heavy-tailed?) that benchmarks/verdict_calibration.py
simulates, and how much noise non-deterministic GPU kernels add to an otherwise identical run.

The recipe follows the default benchmark (phantom 1,000 patients at 48 px, patient-wise 70/10/20
split, ResNet-50 from scratch, Adam 3e-4, batch 32, 2 epochs, BCE; flips and rotations up to 20
degrees; the checkpoint with the lowest validation loss is tested) but draws its own batch order,
augmentation and starting weights from the seed with torch, so its figures are this recipe's
noise, not a harness run's. Two modes per seed: deterministic (cuDNN deterministic, no autotuning,
TF32 off), and the same seed again with cuDNN's fastest (non-deterministic) kernels.

    python benchmarks/gpu_training_noise.py --export phantom.npz        # on the host: the data (numpy)
    python benchmarks/gpu_training_noise.py --data phantom.npz --seeds 20 --out noise.json   # on the GPU
    # reference/gpu_training_noise.json was measured on issue 14's default (conspicuity 2.0, 3 epochs):
    python benchmarks/gpu_training_noise.py --export issue14.npz --conspicuity 2.0
    python benchmarks/gpu_training_noise.py --data issue14.npz --epochs 3 --seeds 20 --out noise.json
    # the recipe before issue 14, for comparison: 1,500 patients, conspicuity 1.0, 64 px, Adam 1e-3, 5 epochs
    python benchmarks/gpu_training_noise.py --export old.npz --patients 1500 --conspicuity 1.0 --image-size 64
    python benchmarks/gpu_training_noise.py --data old.npz --lr 1e-3 --epochs 5 --deterministic-only --out old.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np


def export(path: Path, patients: int | None, conspicuity: float | None, image_size: int) -> None:
    """The phantom (default: the benchmark's) and its split, as the benchmark makes them (harness
    imports: host only)."""
    from harness.data.datasets.phantom import PhantomConfig, generate_phantom
    from harness.data.splits import patient_wise_split

    overrides = {"patients": patients, "conspicuity": conspicuity}
    data = generate_phantom(PhantomConfig(image_size=image_size, **{k: v for k, v in overrides.items() if v}))
    split = patient_wise_split(data.patient_ids, (0.7, 0.1, 0.2), seed=0)
    np.savez_compressed(path, **{f"{part}_x": data.pixels[getattr(split, part)] for part in ("train", "validation", "test")},
                        **{f"{part}_y": data.labels[getattr(split, part)] for part in ("train", "validation", "test")})


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Macro AUROC by the rank-sum formula (ties get mid-ranks), labels with both classes only."""
    values = []
    for j in range(labels.shape[1]):
        y, s = labels[:, j].astype(bool), scores[:, j]
        if y.all() or not y.any():
            continue
        order = np.argsort(s, kind="mergesort")
        ranks = np.empty(len(s))
        sorted_s = s[order]
        _, inverse, counts = np.unique(sorted_s, return_inverse=True, return_counts=True)
        mid = np.cumsum(counts) - (counts - 1) / 2.0
        ranks[order] = mid[inverse]
        positives = y.sum()
        values.append((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * (len(y) - positives)))
    return float(np.mean(values))


def train(data: dict, seed: int, deterministic: bool, epochs: int, device: str, lr: float = 3e-4) -> dict:
    import torch
    import torch.nn.functional as F
    import torchvision

    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(seed)
    model = torchvision.models.resnet50(weights=None, num_classes=14).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)

    def prepare(pixels: torch.Tensor) -> torch.Tensor:
        return (pixels.float().div(255).unsqueeze(1).expand(-1, 3, -1, -1) - mean) / std

    x = {part: torch.from_numpy(data[f"{part}_x"]).to(device) for part in ("train", "validation", "test")}
    y = {part: torch.from_numpy(data[f"{part}_y"]).float().to(device) for part in ("train", "validation", "test")}
    generator = torch.Generator(device="cpu").manual_seed(seed)

    def predict(part: str) -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            return torch.cat([model(prepare(x[part][i:i + 256])) for i in range(0, len(x[part]), 256)])

    best, best_loss, losses = None, math.inf, []
    started = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x["train"]), generator=generator)
        for i in range(0, len(order) - 31, 32):  # the incomplete last batch is dropped, as in the harness
            batch = order[i:i + 32]
            images = prepare(x["train"][batch.to(device)])
            flip = torch.rand(len(batch), generator=generator) < 0.5
            images[flip.to(device)] = images[flip.to(device)].flip(-1)
            angle = (torch.rand(len(batch), generator=generator) * 40 - 20) * math.pi / 180
            cos, sin = torch.cos(angle), torch.sin(angle)
            theta = torch.stack([torch.stack([cos, -sin, torch.zeros_like(cos)], 1),
                                 torch.stack([sin, cos, torch.zeros_like(cos)], 1)], 1).to(device)
            grid = F.affine_grid(theta, list(images.shape), align_corners=False)
            images = F.grid_sample(images, grid, align_corners=False)
            loss = F.binary_cross_entropy_with_logits(model(images), y["train"][batch.to(device)])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        validation_loss = float(F.binary_cross_entropy_with_logits(predict("validation"), y["validation"]))
        losses.append(validation_loss)
        if validation_loss < best_loss:
            best_loss, best = validation_loss, {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best)
    test = predict("test").cpu().numpy()
    return {"seed": seed, "deterministic": deterministic, "validation_losses": losses,
            "test_macro_auroc": auroc(data["test_y"], test), "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", type=Path, help="write the default phantom and split here, then stop")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=Path("noise.json"))
    parser.add_argument("--limit", type=int, help="use only this many training images (a quick check)")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--deterministic-only", action="store_true", help="skip the non-deterministic reruns")
    parser.add_argument("--patients", type=int, help="--export: phantom patients (default: the phantom's)")
    parser.add_argument("--conspicuity", type=float, help="--export: finding strength (default: the phantom's)")
    parser.add_argument("--image-size", type=int, default=48, help="--export: image side (default 48)")
    args = parser.parse_args()
    if args.export:
        export(args.export, args.patients, args.conspicuity, args.image_size)
        return
    import torch

    data = dict(np.load(args.data))
    if args.limit:
        data["train_x"], data["train_y"] = data["train_x"][:args.limit], data["train_y"][:args.limit]
    runs = []
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    for seed in range(args.seeds):
        for deterministic in (True,) if args.deterministic_only else (True, False):
            runs.append(train(data, seed, deterministic, args.epochs, args.device, args.lr))
            print(json.dumps(runs[-1]), flush=True)
            args.out.write_text(json.dumps({"torch": torch.__version__, "device": device, "runs": runs}, indent=1))
    for deterministic in (True,) if args.deterministic_only else (True, False):
        values = np.array([run["test_macro_auroc"] for run in runs if run["deterministic"] == deterministic])
        print(f"deterministic={deterministic}: {len(values)} seeds, test macro AUROC mean {values.mean():.4f} "
              f"sd {values.std(ddof=1):.4f}, min {values.min():.4f}, max {values.max():.4f}")
    if not args.deterministic_only:
        same = [abs(a["test_macro_auroc"] - b["test_macro_auroc"]) for a, b in zip(runs[::2], runs[1::2], strict=True)]
        print(f"same seed, deterministic vs not: mean |difference| {np.mean(same):.4f}, max {np.max(same):.4f}")


if __name__ == "__main__":
    main()
