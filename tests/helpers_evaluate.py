"""A small hand-made test split and pixel-reading fake models for the evaluation tests.

The fakes are real predictors of a toy world: every class (and every tracked object) is painted in its
own pure colour, so segmenting by colour is a perfect model and copying the prompt forward is a poor
one whose score we can compute independently."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from factory_sam3.formats.rle import mask_to_rle, rle_bbox

CLASSES = ["gripper", "part_A", "defect", "screw"]
CLASS_COLOURS = {"gripper": (255, 0, 0), "part_A": (0, 255, 0), "defect": (0, 0, 255), "screw": (255, 255, 0)}
H, W = 48, 64


def box(top, left, bottom, right):
    mask = np.zeros((H, W), dtype=bool)
    mask[max(top, 0) : bottom, max(left, 0) : right] = True
    return mask


def write_coco(root: Path) -> list[tuple[int, str, np.ndarray]]:
    """Three test images (the last a negative) with coloured boxes; returns the instances."""
    split = root / "test"
    split.mkdir(parents=True)
    layout = {
        1: [("gripper", box(5, 5, 20, 25)), ("screw", box(30, 40, 40, 50))],
        2: [("part_A", box(10, 30, 40, 60)), ("gripper", box(2, 2, 12, 12))],
        3: [],
    }
    images, annotations, instances = [], [], []
    for image_id, objects in layout.items():
        pixels = np.zeros((H, W, 3), dtype=np.uint8)
        for name, mask in objects:
            pixels[mask] = CLASS_COLOURS[name]
            rle = mask_to_rle(mask)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": CLASSES.index(name) + 1,
                    "segmentation": rle,
                    "bbox": rle_bbox(rle),
                    "area": int(mask.sum()),
                    "iscrowd": 0,
                }
            )
            instances.append((image_id, name, mask))
        Image.fromarray(pixels).save(split / f"img{image_id}.png")
        images.append({"id": image_id, "file_name": f"img{image_id}.png", "width": W, "height": H})
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]
    (split / "_annotations.coco.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return instances


OBJECT_COLOURS = {1: (255, 0, 0), 2: (0, 255, 0)}


def write_ytvis(root: Path, length: int = 6, annotated: list[int] | None = None) -> dict[int, list[np.ndarray | None]]:
    """One video: object 1 moves right all along; object 2 appears at frame 2 and leaves after frame 3
    (annotated absent, null, on frames 4-5). ``annotated``: the annotated frames (default all, dense);
    the others get null for every object, as keyframe-only annotation leaves them."""
    split = root / "test"
    (split / "vid").mkdir(parents=True)
    annotated = list(range(length)) if annotated is None else annotated
    tracks = {
        1: [box(5, 4 + 5 * t, 20, 20 + 5 * t) for t in range(length)],
        2: [None, None, box(28, 10, 40, 30), box(28, 14, 40, 34), None, None],
    }
    for t in range(length):
        pixels = np.zeros((H, W, 3), dtype=np.uint8)
        for obj, masks in tracks.items():
            if masks[t] is not None:
                pixels[masks[t]] = OBJECT_COLOURS[obj]
        Image.fromarray(pixels).save(split / "vid" / f"{t:05d}.png")
    annotations = []
    for obj, masks in tracks.items():
        rles = [None if m is None or t not in annotated else mask_to_rle(m) for t, m in enumerate(masks)]
        annotations.append(
            {
                "id": obj,
                "video_id": 1,
                "category_id": obj,
                "iscrowd": 0,
                "segmentations": rles,
                "bboxes": [None if r is None else rle_bbox(r) for r in rles],
                "areas": [None if r is None else int(m.sum()) for r, m in zip(rles, masks)],
            }
        )
    data = {
        "videos": [
            {
                "id": 1,
                "file_names": [f"vid/{t:05d}.png" for t in range(length)],
                "length": length,
                "width": W,
                "height": H,
                "annotated_frames": annotated,
            }
        ],
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)],
    }
    (split / "annotations.json").write_text(json.dumps(data))
    return tracks


# --------------------------------------------------------------------------------------- fake models


def colour_segmenter(image, class_names):
    out = []
    for name in class_names:
        mask = np.all(image == np.array(CLASS_COLOURS[name], dtype=np.uint8), axis=2)
        if mask.any():
            out.append({"category": name, "score": 0.9, "mask": mask})
    return out


def colour_tracker(frames, prompts):
    """Follows each object by the colour found under its prompt mask; nothing before its prompt."""
    result = {}
    for obj, (start, mask) in prompts.items():
        colour = frames[start][mask][0]
        result[obj] = [None if t < start else np.all(frame == colour, axis=2) for t, frame in enumerate(frames)]
    return result


def no_output(image, class_names):
    return []
