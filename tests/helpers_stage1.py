"""A tiny synthetic COCO dataset (the to_coco layout) for Stage 1 development and tests.

Each image is a grey background with a few coloured shapes, one colour per category, so even a tiny
randomly initialised SAM3 can learn them in a few hundred CPU steps. Masks are compressed RLE, as
to_coco writes them; about 15% of the images have no object (negatives).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

CATEGORIES = [
    {"id": 1, "name": "gripper", "supercategory": "tool"},
    {"id": 2, "name": "part_A", "supercategory": "part"},
    {"id": 3, "name": "defect", "supercategory": "quality"},
    {"id": 4, "name": "screw", "supercategory": "fastener"},
]
COLOURS = {1: (220, 40, 40), 2: (40, 200, 60), 3: (40, 60, 220), 4: (230, 210, 40)}


def _shape_mask(rng: np.random.Generator, cat_id: int, height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    size = int(rng.integers(min(height, width) // 6, min(height, width) // 3))
    y0 = int(rng.integers(0, height - size))
    x0 = int(rng.integers(0, width - size))
    if cat_id in (1, 3):  # rectangles
        mask[y0 : y0 + size, x0 : x0 + int(size * (1.5 if cat_id == 1 else 0.8)) // 1] = 1
    else:  # discs
        yy, xx = np.mgrid[:height, :width]
        r = size / 2
        mask[(yy - y0 - r) ** 2 + (xx - x0 - r) ** 2 <= r * r] = 1
    return mask


def make_coco_split(
    folder: Path,
    num_images: int,
    seed: int,
    width: int = 128,
    height: int = 96,
    negative_fraction: float = 0.15,
) -> Path:
    """Write ``folder/_annotations.coco.json`` and its images; return the JSON path."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        pixels = np.full((height, width, 3), 110, dtype=np.uint8)
        pixels += rng.integers(0, 20, size=pixels.shape, dtype=np.uint8)
        negative = rng.random() < negative_fraction
        cats = [] if negative else rng.choice([1, 2, 3, 4], size=int(rng.integers(1, 3)), replace=False)
        for cat_id in cats:
            mask = _shape_mask(rng, int(cat_id), height, width)
            pixels[mask.astype(bool)] = COLOURS[int(cat_id)]
            rle = mask_util.encode(np.asfortranarray(mask))
            bbox = [float(v) for v in mask_util.toBbox(rle)]
            rle["counts"] = rle["counts"].decode("ascii")
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(cat_id),
                    "segmentation": rle,
                    "area": float(mask.sum()),
                    "bbox": bbox,
                    "iscrowd": 0,
                }
            )
        name = f"img_{image_id:04d}.jpg"
        Image.fromarray(pixels).save(folder / name, quality=95)
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
    ann_file = folder / "_annotations.coco.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return ann_file


def make_coco(root: Path, train: int = 8, valid: int = 3, test: int = 3, seed: int = 0, **kwargs) -> Path:
    """A data/coco-like tree under ``root`` with train/valid/test splits."""
    for offset, (split, count) in enumerate((("train", train), ("valid", valid), ("test", test))):
        make_coco_split(Path(root) / split, count, seed=seed + offset, **kwargs)
    return Path(root)


if __name__ == "__main__":
    import sys

    print(make_coco(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/stage1_coco"), train=40, valid=8, test=8))
