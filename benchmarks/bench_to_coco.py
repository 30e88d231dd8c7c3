#!/usr/bin/env python3
"""to_coco mask conversion vs the guide's Script 1, on the same generated images + masks, in one run.

Generates ``--images`` JPEGs with one to four class masks each (``<image>_<class>.png``, L-mode PNG as in
the guide's layout), then times the baseline (benchmarks/baselines/guide_convert_masks_to_rle.py) and our
converter (factory_sam3.data.to_coco.convert_mask_folder, the stage's own encoding path) alternately,
``--repeats`` times each after one warm-up, and reports the median masks/s and the ratio. Both outputs are
compared annotation by annotation (same RLE, bbox and area), so the speed-up is not bought with wrong data.

    .venv/bin/python benchmarks/bench_to_coco.py                 # defaults: 120 images, 1280x720, 5 repeats
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from baselines.guide_convert_masks_to_rle import process_mask_folder  # noqa: E402

from factory_sam3.data.to_coco import convert_mask_folder  # noqa: E402
from factory_sam3.layout import CATEGORIES  # noqa: E402


def generate(root: Path, count: int, width: int, height: int, seed: int = 0) -> int:
    """Images with blob-shaped masks for a random subset of classes; returns the number of mask files."""
    rng = np.random.default_rng(seed)
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    n_masks = 0
    for i in range(count):
        name = f"frame_{i:04d}"
        base = rng.integers(60, 200, size=3)
        pixels = np.clip(base + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)
        for cat in CATEGORIES:
            if rng.random() < 0.3:
                continue
            mask = np.zeros((height, width), np.uint8)
            for _ in range(int(rng.integers(1, 4))):  # a few instances of the class, as a class mask
                cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
                axes = (int(rng.integers(10, width // 6)), int(rng.integers(10, height // 6)))
                cv2.ellipse(mask, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
            pixels[mask > 0] = (pixels[mask > 0] * 0.5 + 60).astype(np.uint8)
            Image.fromarray(mask, mode="L").save(masks / f"{name}_{cat['name']}.png")
            n_masks += 1
        Image.fromarray(pixels).save(images / f"{name}.jpg", quality=90)
    return n_masks


def same_annotations(baseline_json: Path, ours_json: Path) -> None:
    """Raise if the two COCO files disagree on any image or annotation."""
    base, ours = json.loads(baseline_json.read_text()), json.loads(ours_json.read_text())
    assert [(i["file_name"], i["width"], i["height"]) for i in base["images"]] == [
        (i["file_name"], i["width"], i["height"]) for i in ours["images"]
    ], "images differ"
    assert len(base["annotations"]) == len(ours["annotations"]), "annotation counts differ"
    for a, b in zip(base["annotations"], ours["annotations"]):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"]), (a["id"], b["id"])
        assert a["segmentation"] == b["segmentation"], f"RLE differs in annotation {a['id']}"
        assert a["bbox"] == b["bbox"] and a["area"] == b["area"], f"bbox/area differ in annotation {a['id']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=0, help="our converter's processes (0 = one per core)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "to_coco")
    parser.add_argument(
        "--single",
        choices=("baseline", "ours", "none"),
        help="run one converter once in this process (ours with workers=1) and exit: for instruction counts "
        "under valgrind, where machine load does not matter ('none' = start-up cost to subtract)",
    )
    args = parser.parse_args()

    data = args.out / f"data_{args.images}_{args.width}x{args.height}"
    n_masks = (
        generate(data, args.images, args.width, args.height)
        if not (data / "images").is_dir()
        else len(list((data / "masks").glob("*.png")))
    )
    baseline_json, ours_json = args.out / "baseline.json", args.out / "ours.json"
    categories = [dict(c) for c in CATEGORIES]

    def run_baseline() -> float:
        start = time.perf_counter()
        process_mask_folder(str(data / "masks"), str(baseline_json), str(data / "images"), categories)
        return time.perf_counter() - start

    def run_ours() -> float:
        start = time.perf_counter()
        convert_mask_folder(data / "images", data / "masks", categories, ours_json, workers=args.workers)
        return time.perf_counter() - start

    if args.single:
        if args.single == "baseline":
            process_mask_folder(str(data / "masks"), str(baseline_json), str(data / "images"), categories)
        elif args.single == "ours":
            convert_mask_folder(data / "images", data / "masks", categories, ours_json, workers=1)
        return

    load_before = os.getloadavg()[0]
    run_baseline(), run_ours()  # warm-up: page cache, imports, pool start-up paths
    same_annotations(baseline_json, ours_json)
    times = {"baseline": [], "ours": []}
    for r in range(args.repeats):
        order = (("baseline", run_baseline), ("ours", run_ours))
        for name, fn in order if r % 2 == 0 else reversed(order):  # alternate who goes first
            times[name].append(fn())
    load_after = os.getloadavg()[0]

    median = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: n_masks / v for k, v in median.items()}
    ratio = median["baseline"] / median["ours"]
    print(f"data: {args.images} images {args.width}x{args.height}, {n_masks} masks; {args.repeats} alternating repeats")
    print(
        f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"load average {load_before:.2f} before / {load_after:.2f} after"
    )
    print()
    print("| converter | median s | masks/s | runs (s) |")
    print("|---|---|---|---|")
    for name, label in (("baseline", "guide Script 1 (baseline)"), ("ours", "to_coco (ours)")):
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        print(f"| {label} | {median[name]:.2f} | {rate[name]:.0f} | {runs} |")
    print()
    print(f"speed-up: {ratio:.2f}x (target >= 3x); outputs identical: yes")


if __name__ == "__main__":
    main()
