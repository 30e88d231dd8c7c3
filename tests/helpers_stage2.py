"""A small YTVIS fixture for Stage 2 tests: moving coloured shapes on a textured background.

``make_ytvis(root, videos=3, frames=8)`` writes ``root/<split>/annotations.json`` + ``<video>/00000.jpg ...``
in the layout ``to_ytvis`` produces: compressed RLE per frame, ``null`` where an object is absent; optionally an
object that leaves the frame for a while (``occlude=True``), an uncompressed-RLE and a polygon segmentation, and
sparse keyframes (``keyframe_every``: frames in between are unannotated for every track).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

COLOURS = [(220, 40, 40), (40, 200, 60), (50, 80, 230), (230, 210, 40)]


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def make_ytvis(
    root: Path,
    split: str = "train",
    videos: int = 3,
    frames: int = 8,
    objects: int = 2,
    height: int = 96,
    width: int = 128,
    seed: int = 0,
    occlude: bool = True,
    keyframe_every: int = 1,
    formats: bool = True,
) -> Path:
    rng = np.random.default_rng(seed)
    split_dir = Path(root) / split
    split_dir.mkdir(parents=True, exist_ok=True)
    records, annotations = [], []
    ann_id = 1
    for v in range(videos):
        name = f"vid{v:02d}"
        (split_dir / name).mkdir(exist_ok=True)
        yy, xx = np.mgrid[0:height, 0:width]
        background = (40 + 30 * np.sin(xx / 7.0 + v)[..., None] + 20 * np.cos(yy / 5.0)[..., None]).astype(np.float32)
        background = np.repeat(background, 3, axis=2)
        starts = rng.uniform([10, 10], [width - 30, height - 30], size=(objects, 2))
        velocity = rng.uniform(-5, 5, size=(objects, 2))
        sizes = rng.integers(10, 20, size=objects)
        segs = [[None] * frames for _ in range(objects)]
        names = []
        for f in range(frames):
            image = background.copy()
            for o in range(objects):
                cx, cy = starts[o] + velocity[o] * f
                cx, cy = np.clip(cx, 0, width - 1), np.clip(cy, 0, height - 1)
                gone = occlude and o == 1 and frames // 3 <= f < frames // 3 + 2
                mask = np.zeros((height, width), dtype=np.uint8)
                if not gone:
                    if o % 2 == 0:
                        cv2.circle(mask, (int(cx), int(cy)), int(sizes[o] // 2 + 2), 1, -1)
                    else:
                        s = int(sizes[o] // 2 + 2)
                        cv2.rectangle(mask, (int(cx) - s, int(cy) - s), (int(cx) + s, int(cy) + s), 1, -1)
                image[mask > 0] = COLOURS[o % len(COLOURS)]
                if mask.any() and f % keyframe_every == 0:
                    segs[o][f] = _rle(mask.astype(bool))
            file_name = f"{name}/{f:05d}.jpg"
            pixels = cv2.cvtColor(np.clip(image, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(split_dir / file_name), pixels)
            names.append(file_name)
        if formats and v == 0:
            # the other encodings a YTVIS file may hold: uncompressed RLE and polygons
            f = next(i for i in range(frames) if segs[0][i] is not None)
            m = mask_utils.decode({"size": segs[0][f]["size"], "counts": segs[0][f]["counts"].encode()})
            flat = m.flatten(order="F")
            changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
            counts = np.diff(np.concatenate([[0], changes])).tolist()
            if sum(counts) != flat.size:
                counts = counts[:-1] + [flat.size - sum(counts[:-1])]
            segs[0][f] = {"size": [height, width], "counts": [int(c) for c in counts]}
            g = next(i for i in range(f + 1, frames) if segs[0][i] is not None)
            m = mask_utils.decode({"size": segs[0][g]["size"], "counts": segs[0][g]["counts"].encode()})
            contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            segs[0][g] = [c.flatten().astype(float).tolist() for c in contours if len(c) >= 3]
        records.append({"id": v + 1, "file_names": names, "length": frames, "width": width, "height": height})
        for o in range(objects):
            annotations.append(
                {
                    "id": ann_id,
                    "video_id": v + 1,
                    "category_id": o % 4 + 1,
                    "iscrowd": 0,
                    "segmentations": segs[o],
                    "bboxes": [None if s is None else [0, 0, 1, 1] for s in segs[o]],
                    "areas": [None if s is None else 1 for s in segs[o]],
                }
            )
            ann_id += 1
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(["gripper", "part_A", "defect", "screw"])]
    (split_dir / "annotations.json").write_text(
        json.dumps({"info": {}, "videos": records, "annotations": annotations, "categories": categories})
    )
    return split_dir
