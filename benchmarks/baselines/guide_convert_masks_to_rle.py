"""Baseline: the guide's Script 1 (convert_masks_to_rle.py), reimplemented for benchmarking.

Behaviour kept as the guide writes it (sam3_factory_finetuning_guide.md, "Script 1: Convert Masks to RLE"):
one process, images listed with glob("*.jpg") and sorted, each image opened with PIL for its size, for every
category an exists() check on ``<stem>_<class>.png``, the mask read with PIL ``convert('L') > 127``, empty
masks skipped, and each mask run-length encoded THREE times (once for the segmentation, once for the bbox,
once for the area), JSON written with indent=2. Do not optimise this file: it is the yardstick.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils


def binary_mask_to_rle(binary_mask: np.ndarray) -> dict:
    fortran = np.asfortranarray(binary_mask.astype(np.uint8))
    rle = mask_utils.encode(fortran)
    rle["counts"] = rle["counts"].decode("utf-8")
    return rle


def process_mask_folder(mask_folder: str, output_json: str, image_folder: str, categories: list[dict]) -> dict:
    images, annotations = [], []
    next_annotation_id = 1
    for image_id, image_path in enumerate(sorted(Path(image_folder).glob("*.jpg")), start=1):
        width, height = Image.open(image_path).size
        images.append({"id": image_id, "file_name": image_path.name, "width": width, "height": height})
        for category in categories:
            mask_path = Path(mask_folder) / f"{image_path.stem}_{category['name']}.png"
            if not mask_path.exists():
                continue
            mask = np.array(Image.open(mask_path).convert("L")) > 127
            if mask.sum() == 0:
                continue
            segmentation = binary_mask_to_rle(mask)
            bbox = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))))
            area = float(mask_utils.area(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))))
            annotations.append(
                {
                    "id": next_annotation_id,
                    "image_id": image_id,
                    "category_id": category["id"],
                    "segmentation": segmentation,
                    "bbox": bbox.tolist(),
                    "area": area,
                    "iscrowd": 0,
                }
            )
            next_annotation_id += 1
    dataset = {
        "info": {"description": "Factory Dataset", "version": "1.0"},
        "images": images,
        "categories": categories,
        "annotations": annotations,
    }
    with open(output_json, "w") as handle:
        json.dump(dataset, handle, indent=2)
    return {"images": len(images), "annotations": len(annotations)}
