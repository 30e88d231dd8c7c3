"""Roboflow(-100) COCO exports -> data/raw (images/, image_annotations/, splits.json, categories.json).

An export is ``train/ valid/ test/``, each with ``_annotations.coco.json`` beside its images (any subset of
the three). ``fetch.path`` is that folder or a .zip of it; or, when ``ROBOFLOW_API_KEY`` is set and
``fetch.path`` reads ``workspace/project/version`` (e.g. ``roboflow-100/cells-uyemf/2``), the export is
downloaded with the ``roboflow`` package first.

Roboflow exports usually carry a category that is only the dataset's super-category (often id 0, never
annotated, named as the ``supercategory`` of the real classes); it is dropped. Segmentations may be polygons
or RLE (uncompressed RLE is compressed); a detection-only annotation (no segmentation) becomes its box as a
polygon, with a warning, so box datasets still run.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pycocotools import mask as mask_utils

from factory_sam3.errors import UserError
from factory_sam3.io import read_json, write_json
from factory_sam3.sources.archive import find_root, local_input
from factory_sam3.sources.common import check_categories, copy_as_jpeg, safe_name

SPLIT_DIRS = {"train": "train", "valid": "valid", "val": "valid", "test": "test"}
ANNOTATIONS = "_annotations.coco.json"
PROJECT_ID = re.compile(r"^[\w.-]+/[\w.-]+/\d+$")


def _is_export(path: Path) -> bool:
    return any((path / d / ANNOTATIONS).is_file() for d in SPLIT_DIRS)


@contextlib.contextmanager
def _download(project_id: str, api_key: str) -> Iterator[Path]:
    try:
        from roboflow import Roboflow  # optional dependency, only for downloads
    except ImportError:
        raise UserError(
            "downloading needs the 'roboflow' package: pip install roboflow "
            "(or point fetch.path at a downloaded COCO export folder or .zip)"
        ) from None
    workspace, project, version = project_id.split("/")
    scratch = Path(tempfile.mkdtemp(prefix="factory-sam3-roboflow-"))
    try:
        try:
            Roboflow(api_key=api_key).workspace(workspace).project(project).version(int(version)).download(
                "coco", location=str(scratch / "export")
            )
        except Exception as err:  # the client raises assorted errors for bad keys, names, network
            raise UserError(f"Roboflow download failed: {err}", project_id) from None
        yield scratch / "export"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _input(path: Any) -> contextlib.AbstractContextManager[Path]:
    api_key = os.environ.get("ROBOFLOW_API_KEY")
    if api_key and isinstance(path, str) and PROJECT_ID.match(path) and not Path(path).exists():
        return _download(path, api_key)
    return local_input(path, "Roboflow COCO export (train/ valid/ test/ with _annotations.coco.json)")


def _segmentation(ann: dict, width: int, height: int, file: Path, record: str) -> tuple[Any, bool]:
    """(segmentation in raw-layout form, whether it was made from the box)."""
    seg = ann.get("segmentation")
    if isinstance(seg, dict):
        counts = seg.get("counts")
        size = seg.get("size")
        if not (isinstance(size, list) and len(size) == 2):
            raise UserError("RLE segmentation needs 'size': [height, width]", file, record)
        if isinstance(counts, list):
            try:
                rle = mask_utils.frPyObjects(seg, int(size[0]), int(size[1]))
            except Exception as err:
                raise UserError(f"uncompressed RLE cannot be read ({err})", file, record) from None
            return {"size": [int(size[0]), int(size[1])], "counts": rle["counts"].decode("ascii")}, False
        if isinstance(counts, str):
            return {"size": [int(size[0]), int(size[1])], "counts": counts}, False
        raise UserError("RLE 'counts' must be a string or a list of integers", file, record)
    if isinstance(seg, list):
        polygons = [
            [float(v) for v in poly] for poly in seg if isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0
        ]
        if polygons:
            return polygons, False
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
        raise UserError("annotation has neither a segmentation nor a bbox", file, record)
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        raise UserError(f"annotation has no segmentation and an empty bbox {bbox}", file, record)
    return [[x, y, x + w, y, x + w, y + h, x, y + h]], True


def _categories(exports: list[tuple[str, Path, dict]]) -> dict[int, dict]:
    """Original id -> category, merged over the splits, minus the unannotated super-category."""
    by_id: dict[int, dict] = {}
    used: set[int] = set()
    for _, json_path, coco in exports:
        cats = coco.get("categories")
        for cat in check_categories(cats, json_path):
            known = by_id.get(cat["id"])
            if known is not None and known["name"] != cat["name"]:
                raise UserError(
                    f"category id {cat['id']} is '{cat['name']}' here but '{known['name']}' in another split", json_path
                )
            by_id[cat["id"]] = cat
        used.update(a.get("category_id") for a in coco.get("annotations", []) if isinstance(a, dict))
    supers = {c["supercategory"] for c in by_id.values()}
    return {cid: cat for cid, cat in sorted(by_id.items()) if cid in used or cat["name"] not in supers}


def convert_export(root: Path, out: Path) -> dict:
    exports = []
    for dirname, split in SPLIT_DIRS.items():
        json_path = root / dirname / ANNOTATIONS
        if json_path.is_file():
            coco = read_json(json_path)
            if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
                raise UserError("not a COCO file (needs 'images', 'annotations', 'categories')", json_path)
            exports.append((split, json_path, coco))
    categories = _categories(exports)
    new_categories = [
        {"id": i, "name": c["name"], "supercategory": c["supercategory"]}
        for i, c in enumerate(categories.values(), start=1)
    ]
    write_json(out / "categories.json", new_categories, indent=2, atomic=False)
    (out / "images").mkdir()
    (out / "image_annotations").mkdir()

    splits: dict[str, str] = {}
    boxes_as_masks = 0
    images_total = 0
    for split, json_path, coco in exports:
        by_image: dict[Any, list[dict]] = {}
        for i, ann in enumerate(coco.get("annotations") or []):
            if not isinstance(ann, dict) or "image_id" not in ann:
                raise UserError("annotation needs an 'image_id'", json_path, f"annotation {i}")
            by_image.setdefault(ann["image_id"], []).append(ann)
        image_ids = set()
        for image in coco["images"]:
            if not isinstance(image, dict) or "file_name" not in image or "id" not in image:
                raise UserError("image record needs 'id' and 'file_name'", json_path, f"image {image!r:.60}")
            record = f"image {image['id']}"
            image_ids.add(image["id"])
            src = json_path.parent / image["file_name"]
            if not src.is_file():
                raise UserError(
                    f"image file '{image['file_name']}' not found beside the annotations", json_path, record
                )
            name = safe_name(Path(image["file_name"]).stem)
            if name in splits:
                name = f"{split}_{name}"
            if name in splits:
                name = f"{name}_{image['id']}"
            width, height = image.get("width"), image.get("height")
            if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
                raise UserError("image record needs positive integer 'width' and 'height'", json_path, record)
            instances = []
            for ann in by_image.get(image["id"], []):
                ann_record = f"annotation {ann.get('id')}"
                cid = ann.get("category_id")
                if cid not in categories:
                    raise UserError(f"unknown category_id {cid!r}", json_path, ann_record)
                seg, from_box = _segmentation(ann, width, height, json_path, ann_record)
                boxes_as_masks += from_box
                instances.append({"category": categories[cid]["name"], "segmentation": seg})
            copy_as_jpeg(src, out / "images" / f"{name}.jpg")
            write_json(
                out / "image_annotations" / f"{name}.json",
                {"width": width, "height": height, "instances": instances},
                indent=None,
                atomic=False,
            )
            splits[name] = split
            images_total += 1
        orphans = set(by_image) - image_ids
        if orphans:
            raise UserError(f"annotations refer to missing image id(s) {sorted(orphans, key=str)[:5]}", json_path)
    if not images_total:
        raise UserError("the export holds no images", root)
    if boxes_as_masks:
        print(
            f"warning: {boxes_as_masks} annotation(s) had no segmentation; their boxes are used as masks",
            file=sys.stderr,
        )
    write_json(out / "splits.json", splits, indent=1, atomic=False)
    return {"images": images_total, "boxes_as_masks": boxes_as_masks, "categories": len(new_categories)}


def fetch(params, out: Path) -> dict:
    path = params.path
    with _input(path) as folder:
        root = find_root(folder, _is_export)
        if root is None:
            raise UserError(
                f"no Roboflow COCO export found: expected train/, valid/ or test/ folders with {ANNOTATIONS}", path
            )
        stats = convert_export(root, out)
    return {"source": "roboflow", "path": str(path), **stats}
