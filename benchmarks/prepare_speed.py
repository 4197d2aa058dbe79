"""Prepare benchmark: decode + resize of 1024x1024 NIH-layout PNGs into the pixel store.

Prints, and checks against the targets for a 2-core machine:
- decode + resize to 224 on one core: at least 150 img/s (decode_grayscale, the prepare's own code);
- `prepare_nih` with every core against one process: at least 1.7x faster;
- peak memory of the whole prepare (the harness plus its decoder processes): under 2 GB, whatever
  the dataset size (run it on the full-size tree to show it: pixels are never held in memory,
  only the index grows, by about 2 KB per image).

Each prepare runs in a fresh process with an empty cache, so it decodes everything and its peak
resident memory is its own. Without --root, a 3,000-image tree is generated first (benchmarks/
make_nih_tree.py, realistic ~375 KB PNGs hard-linked from a pool).

    .venv/bin/python -m benchmarks.prepare_speed
    .venv/bin/python -m benchmarks.make_nih_tree --root /tmp/nih_full      # 112,120 images
    .venv/bin/python -m benchmarks.prepare_speed --root /tmp/nih_full --parallel-only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from harness.data.datasets.image_decode import decode_grayscale
from harness.data.datasets.nih_index import read_nih_index

PER_CORE_TARGET = 150.0
SPEEDUP_TARGET = 1.7
MEMORY_TARGET_BYTES = 2 * 1024**3

# Runs in a child: prepare into an empty cache, then report time and peak memory (KiB on Linux).
_CHILD = """
import json, resource, sys, time
from pathlib import Path
from harness.data.datasets.nih import prepare_nih
root, size, cache, processes = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
start = time.perf_counter()
store = prepare_nih(root, size, cache, processes=processes).store
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "images": len(store),
                  "self_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "child_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def per_core_rate(paths: list[Path], size: int) -> float:
    """decode_grayscale images/s in this process, one OpenCV thread, files already in the page cache."""
    cv2.setNumThreads(1)
    for path in paths:
        path.read_bytes()  # page cache warm: the figure is decoding, not the disk
    start = time.perf_counter()
    for path in paths:
        decode_grayscale(path, size)
    return len(paths) / (time.perf_counter() - start)


def _tree_rss_bytes(root_pid: int) -> int:
    """Resident memory of a process and all its descendants now (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        children.setdefault(int(fields[1]), []).append(int(entry))
        rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack += children.get(pid, [])
    return total


def timed_prepare(root: Path, size: int, processes: int) -> dict:
    """Prepare `root` in a child process with an empty cache; its seconds, images and peak memory.

    Memory is sampled every 0.2 s as the resident total of the prepare and its decoder processes
    (shared pages counted in each: an over-estimate). ru_maxrss gives a cruder upper bound: a
    spawned decoder's figure includes the parent's size at fork time, before exec.
    """
    with tempfile.TemporaryDirectory(prefix="cxrbench-prepare-") as cache:
        child = subprocess.Popen([sys.executable, "-c", _CHILD, str(root), str(size), cache, str(processes)],
                                 stdout=subprocess.PIPE, text=True)
        sampled = 0
        while child.poll() is None:
            sampled = max(sampled, _tree_rss_bytes(child.pid))
            time.sleep(0.2)
        output = child.stdout.read()
        if child.returncode:
            raise RuntimeError(f"prepare failed with exit status {child.returncode}")
    result = json.loads(output.strip().splitlines()[-1])
    result["sampled_peak_bytes"] = sampled
    result["peak_bytes"] = (result["self_kib"] + processes * result["child_kib"]) * 1024
    result["images_per_second"] = result["images"] / result["seconds"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=None, help="an NIH-layout tree (default: generate 3,000 images)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--per-core-images", type=int, default=300)
    parser.add_argument("--parallel-only", action="store_true", help="skip the one-process prepare (for the full-size tree)")
    parser.add_argument("--png-filter", default="up", help="PNG filter of the generated tree: up (decodes like NIH's) or adaptive (worst case)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cxrbench-nih-tree-") as scratch:
        root = args.root
        if root is None:
            from benchmarks import make_nih_tree

            root = Path(scratch) / "nih"
            make_nih_tree.main(["--root", str(root), "--images", "3000", "--patients", "825", "--pool", "64",
                                "--png-filter", args.png_filter])
        return run(root, args)


def run(root: Path, args: argparse.Namespace) -> int:
    """Measure and print every figure; 1 when a target is missed."""
    index = read_nih_index(root)
    sample = list(index.image_paths[: args.per_core_images])
    sizes = [path.stat().st_size for path in sample]
    print(f"tree: {root}, {len(index):,} images of {len(np.unique(index.patient_ids)):,} patients; "
          f"mean PNG {np.mean(sizes) / 1000:.0f} KB over the {len(sample)} timed")
    rate = per_core_rate(sample, args.image_size)
    print(f"decode + resize to {args.image_size}, one core: {rate:.0f} img/s (target {PER_CORE_TARGET:.0f})")
    checks = {"per-core decode": rate >= PER_CORE_TARGET}
    parallel = timed_prepare(root, args.image_size, args.processes)
    print(f"prepare, {args.processes} processes: {parallel['images']:,} images in {parallel['seconds']:.1f} s "
          f"= {parallel['images_per_second']:.0f} img/s; peak memory of the process tree "
          f"{parallel['sampled_peak_bytes'] / 2**20:.0f} MiB sampled, at most {parallel['peak_bytes'] / 2**20:.0f} MiB "
          f"by ru_maxrss (harness {parallel['self_kib'] / 1024:.0f} MiB + {args.processes} x decoder "
          f"{parallel['child_kib'] / 1024:.0f} MiB)")
    checks["peak memory"] = parallel["peak_bytes"] < MEMORY_TARGET_BYTES
    if not args.parallel_only:
        single = timed_prepare(root, args.image_size, 1)
        speedup = single["seconds"] / parallel["seconds"]
        print(f"prepare, 1 process: {single['seconds']:.1f} s = {single['images_per_second']:.0f} img/s; "
              f"speed-up with {args.processes}: {speedup:.2f}x (target {SPEEDUP_TARGET}x); "
              f"peak memory {single['sampled_peak_bytes'] / 2**20:.0f} MiB sampled")
        checks["speed-up"] = speedup >= SPEEDUP_TARGET
    for name, ok in checks.items():
        print(f"{'meets' if ok else 'MISSES'} the {name} target")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
