"""Write a full-size synthetic NIH ChestX-ray14 tree, to time indexing and decoding without the real 42 GB.

112,120 images of 30,805 patients (images per patient drawn from the real histogram), 1024 x 1024
8-bit PNGs in images_001/images .. images_012/images (or a flat images/), Data_Entry_2017.csv and
patient-wise official lists; with `--boxed-images N`, BBox_List_2017.csv too (boxes on N images
with one of its 8 findings; the real file has 984 boxes on 880 images). Disk use stays small: every
image is a hard link to one of a pool of `--pool` distinct PNGs (256 x ~375 KB ~ 96 MB in all).

The pool is made realistic for decode speed: phantom radiographs (harness.data.datasets.phantom) are
smoothed with a Gaussian blur whose sigma is found by bisection so that the mean PNG size
(zlib level 6) matches the real files' ~375 KB (42 GB / 112,120). Decode time also depends on the
PNG row filter: with the Up filter (the default, `--png-filter up`) the pool decodes at the rate
measured on the real NIH files (170-185 img/s per core with OpenCV, as reported for the real files); libpng's
default adaptive choice (`--png-filter adaptive`, mostly Paeth on smooth images) decodes about 2x
slower at the same size and is the worst case. (Hard links share inodes: the page cache holds only
the pool, so cold-disk reads are not represented.)

Run from the repository root:
    .venv/bin/python -m benchmarks.make_nih_tree --root /data/nih_synthetic
    .venv/bin/python -m benchmarks.make_nih_tree --root /tmp/nih_small --patients 300 --images 1000 --pool 16
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from benchmarks.nih_tree import CSV_VARIANTS, LAYOUTS, NihRow, counts_from_histogram, csv_name, write_tree
from harness.data.datasets.image_decode import decode_grayscale
from harness.data.datasets.phantom import PhantomConfig, generate_phantom

# reference/chestxray14_stats.json, "images_per_patient_histogram": {images per patient: patients};
# 30,805 patients, 112,120 images.
IMAGES_PER_PATIENT = {
    1: 17503, 2: 4113, 3: 2100, 4: 1330, 5: 938, 6: 787, 7: 608, 8: 494, 9: 387, 10: 320, 11: 281, 12: 235,
    13: 165, 14: 181, 15: 121, 16: 120, 17: 91, 18: 77, 19: 77, 20: 74, 21: 68, 22: 39, 23: 50, 24: 51,
    25: 45, 26: 35, 27: 38, 28: 27, 29: 25, 30: 28, 31: 17, 32: 22, 33: 20, 34: 23, 35: 24, 36: 8, 37: 11,
    38: 16, 39: 11, 40: 12, 41: 14, 42: 11, 43: 6, 44: 8, 45: 6, 46: 10, 47: 5, 48: 7, 49: 9, 50: 6, 51: 11,
    52: 7, 53: 5, 54: 7, 55: 10, 56: 7, 57: 2, 58: 4, 59: 3, 60: 3, 61: 8, 62: 7, 63: 3, 64: 3, 65: 3, 66: 6,
    67: 3, 68: 4, 69: 6, 70: 2, 71: 2, 73: 2, 74: 1, 75: 1, 76: 2, 77: 2, 79: 1, 80: 2, 81: 3, 83: 1, 84: 2,
    86: 3, 87: 1, 88: 1, 89: 1, 90: 2, 91: 1, 99: 1, 102: 1, 108: 3, 109: 1, 111: 1, 114: 1, 116: 2, 117: 1,
    119: 1, 130: 1, 137: 1, 143: 1, 157: 1, 158: 1, 173: 1, 184: 1,
}  # fmt: skip
REAL_MEAN_PNG_BYTES = 375_000  # 42 GB / 112,120 images at 1024 x 1024
PNG_LEVEL = [cv2.IMWRITE_PNG_COMPRESSION, 6]
PNG_FILTERS = {"up": [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP], "adaptive": []}
POOL_FOLDER = ".pool"  # inside the root so hard links stay on one file system; removed at the end


def phantom_pool(count: int, size: int, seed: int) -> list[np.ndarray]:
    """`count` distinct phantom radiographs at `size` (drawn at up to 1024, resized above it)."""
    drawn = min(size, 1024)  # the phantom draws at most 1024 x 1024
    images: list[np.ndarray] = []
    with tqdm(total=count, desc="drawing pool", unit="img") as bar:
        batch = 0
        while len(images) < count:  # a few patients at a time keeps memory bounded
            data = generate_phantom(PhantomConfig(seed=seed + batch, image_size=drawn, patients=4))
            for pixels in data.pixels[: count - len(images)]:
                images.append(pixels if drawn == size else cv2.resize(pixels, (size, size), interpolation=cv2.INTER_LINEAR))
                bar.update(1)
            batch += 1
    return images


def png_bytes(image: np.ndarray, sigma: float, png_filter: str = "up") -> bytes:
    """The PNG encoding of `image` after a Gaussian blur of `sigma` pixels (none at 0)."""
    blurred = cv2.GaussianBlur(image, (0, 0), sigma) if sigma > 0 else image
    ok, encoded = cv2.imencode(".png", blurred, PNG_LEVEL + PNG_FILTERS[png_filter])
    if not ok:
        raise RuntimeError("OpenCV could not encode a PNG")
    return encoded.tobytes()


def calibrate_blur(sample: list[np.ndarray], target_bytes: float, png_filter: str = "up", steps: int = 10) -> float:
    """The blur sigma at which the sample's mean PNG size is `target_bytes` (bisection in [0, 6]).

    More blur removes noise and so shrinks the PNG; if even no blur is below target, returns 0.
    """
    def mean_size(sigma: float) -> float:
        with ThreadPoolExecutor() as threads:  # OpenCV releases the GIL while encoding
            return float(np.mean([len(data) for data in threads.map(lambda image: png_bytes(image, sigma, png_filter), sample)]))

    if mean_size(0.0) <= target_bytes:
        return 0.0
    low, high = 0.0, 6.0
    for _ in range(steps):
        middle = (low + high) / 2
        low, high = (middle, high) if mean_size(middle) > target_bytes else (low, middle)
    return (low + high) / 2


def decode_rate(paths: list[Path], size: int) -> float:
    """Images per second that decode_grayscale reaches on one core over `paths` (files cached)."""
    cv2.setNumThreads(1)
    for path in paths[:4]:
        decode_grayscale(path, size)  # warm the page cache
    start = time.perf_counter()
    for path in paths:
        decode_grayscale(path, size)
    return len(paths) / (time.perf_counter() - start)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--root", type=Path, required=True, help="folder to create (must be absent or empty)")
    parser.add_argument("--patients", type=int, default=30805)
    parser.add_argument("--images", type=int, default=112120)
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--pool", type=int, default=256, help="distinct PNGs the images hard-link to")
    parser.add_argument("--layout", choices=LAYOUTS, default="split")
    parser.add_argument("--variant", choices=CSV_VARIANTS, default="2017", help="CSV spelling")
    parser.add_argument("--png-filter", choices=tuple(PNG_FILTERS), default="up",
                        help="PNG row filter: 'up' decodes like the real files, 'adaptive' (libpng's default) is the slow worst case")
    parser.add_argument("--boxed-images", type=int, default=None, metavar="N",
                        help="also write BBox_List_2017.csv, boxes on N images (the real file: 880); default: none")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.root.exists() and any(args.root.iterdir()):
        parser.error(f"--root {args.root} is not empty; choose a new folder or empty it")
    if not 1 <= args.patients <= args.images:
        parser.error(f"need 1 <= --patients ({args.patients}) <= --images ({args.images})")
    if args.pool < 1 or args.image_size < 16:
        parser.error("--pool must be at least 1 and --image-size at least 16")
    if args.boxed_images is not None and not 0 <= args.boxed_images <= args.images:
        parser.error(f"--boxed-images must be between 0 and --images ({args.images})")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Write the tree; print and return a summary."""
    args = parse_args(argv)
    started = time.perf_counter()
    root = args.root
    pool_folder = root / POOL_FOLDER
    pool_folder.mkdir(parents=True)
    pool = phantom_pool(args.pool, args.image_size, args.seed)
    target = REAL_MEAN_PNG_BYTES * (args.image_size / 1024) ** 2  # same bits per pixel at other sizes
    sigma = calibrate_blur(pool[:: max(1, len(pool) // 32)][:32], target, args.png_filter)  # spread over patients and exposures
    pool_paths, pool_sizes = [], []
    for k, image in enumerate(tqdm(pool, desc="writing pool", unit="img")):
        path = pool_folder / f"pool_{k:04d}.png"
        encoded = png_bytes(image, sigma, args.png_filter)
        path.write_bytes(encoded)
        pool_paths.append(path)
        pool_sizes.append(len(encoded))

    counts = counts_from_histogram(IMAGES_PER_PATIENT, args.patients, args.images, args.seed)
    rng = np.random.default_rng(args.seed)
    choice = rng.integers(0, len(pool_paths), args.images)  # which pool PNG each image links to
    with tqdm(total=args.images, desc="linking images", unit="img") as bar:

        def link(i: int, row: NihRow, path: Path) -> None:
            os.link(pool_paths[choice[i]], path)
            bar.update(1)

        rows = write_tree(root, args.patients, counts, args.image_size, args.layout, args.seed,
                          official_lists=True, variant=args.variant, place_image=link,
                          boxes=args.boxed_images is not None, boxed_images=args.boxed_images)  # fmt: skip
    rate = decode_rate(pool_paths[:64], args.image_size)
    shutil.rmtree(pool_folder)  # the links keep the data
    test_images = len((root / "test_list.txt").read_text().split())
    box_file = root / "BBox_List_2017.csv"
    box_rows = len(box_file.read_text().splitlines()) - 1 if box_file.is_file() else None
    summary = {
        "root": str(root), "csv": csv_name(args.variant), "layout": args.layout, "images": len(rows),
        "patients": args.patients, "max_images_per_patient": int(counts.max()), "official_test_images": test_images,
        "pool": args.pool, "png_filter": args.png_filter, "blur_sigma": round(sigma, 3), "mean_png_bytes": int(np.mean(pool_sizes)),
        "target_png_bytes": int(target), "disk_bytes": int(sum(pool_sizes)), "boxes": box_rows,
        "decode_images_per_second_one_core": round(rate, 1), "seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    print(f"wrote {len(rows):,} images of {args.patients:,} patients under {root} ({args.layout} layout, {summary['csv']})")
    print(f"official split: {len(rows) - test_images:,} train/val, {test_images:,} test images")
    if box_rows is not None:
        print(f"BBox_List_2017.csv: {box_rows:,} boxes")
    print(f"pool: {args.pool} PNGs, {args.png_filter} PNG filter, blur sigma {sigma:.2f}, mean PNG size {summary['mean_png_bytes'] / 1000:.0f} KB "
          f"(target {target / 1000:.0f} KB), {summary['disk_bytes'] / 1e6:.0f} MB on disk")  # fmt: skip
    print(f"decode_grayscale: {rate:.0f} images/s on one core at {args.image_size} x {args.image_size}")
    print(f"done in {summary['seconds']:.0f} s")
    return summary


if __name__ == "__main__":
    main()
