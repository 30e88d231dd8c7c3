"""COCO instance segmentation JSON (the layout sam3's trainer reads: ``<split>/_annotations.coco.json``
beside the split's images): small record builders, a reader and an atomic writer."""

from __future__ import annotations

import os
from typing import Any

from factory_sam3.io import read_json_object, write_json

INFO = {"description": "Factory dataset for SAM3 fine-tuning (Stage 1, images)", "version": "1.0"}


def image_record(image_id: int, file_name: str, width: int, height: int) -> dict:
    return {"id": int(image_id), "file_name": file_name, "width": int(width), "height": int(height)}


def annotation_record(ann_id: int, image_id: int, category_id: int, rle: dict, bbox: list[float], area: int) -> dict:
    """One instance; ``rle``, ``bbox`` and ``area`` must come from the same encoding (formats.rle)."""
    return {
        "id": int(ann_id),
        "image_id": int(image_id),
        "category_id": int(category_id),
        "segmentation": rle,
        "bbox": [float(v) for v in bbox],
        "area": int(area),
        "iscrowd": 0,
    }


def dataset(images: list[dict], annotations: list[dict], categories: list[dict]) -> dict:
    return {"info": dict(INFO), "images": images, "annotations": annotations, "categories": categories}


def write(path: str | os.PathLike, data: dict) -> None:
    """Write compact JSON atomically (no indent: real datasets hold megabytes of RLE strings)."""
    write_json(path, data, indent=None, sort_keys=False)


def read(path: str | os.PathLike) -> dict:
    """Load a COCO JSON file; a missing file or broken JSON is a UserError naming the file (and line)."""
    return read_json_object(path, required=("images", "annotations", "categories"))


def category_maps(categories: list[dict[str, Any]]) -> tuple[dict[str, int], dict[int, str]]:
    """``(name -> id, id -> name)`` for a categories list."""
    by_name = {c["name"]: int(c["id"]) for c in categories}
    by_id = {int(c["id"]): c["name"] for c in categories}
    return by_name, by_id
