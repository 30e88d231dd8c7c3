#!/usr/bin/env python3
"""What the prepared dataset looks like to the model: motion, object sizes, density, the copy-forward
reference and the split sizes. Reads the pipeline's outputs (data/ytvis, data/coco), so it describes any
source, not only the synthetic default. Run from the repository root after `dvc repro to_ytvis`:

    python benchmarks/data_stats.py                 # tiny profile: 224 px input, 14-px patches
    python benchmarks/data_stats.py --resolution 1008 --json stats.json

- motion: centroid shift of an object between consecutive ANNOTATED frames (as Stage 2 and the evaluation
  step through a video), px of the prepared frames; only objects fully inside the view and not occluded
  on both frames (their visible area within 10 % of each other), so clipping does not count as motion;
- size: mask bounding box at the model's input (frames are resized to resolution x resolution), in feature
  cells (patch px), median per class; "cells" = sqrt(area)/patch;
- copy-forward IoU at stride s: the mask of annotated frame k used as the prediction for annotated frame
  k+s (0 when the object is gone), mean over objects and frames: how hard tracking is without a tracker;
- splits: videos (keyframe-only among them), annotated frames, COCO images and their negatives.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from factory_sam3 import layout  # noqa: E402
from factory_sam3.formats import coco, ytvis  # noqa: E402
from factory_sam3.formats.rle import rle_to_mask, to_rle  # noqa: E402

STRIDES = (1, 2, 3, 4, 5)


def _median(values: list[float]) -> float | None:
    return round(float(np.median(values)), 2) if values else None


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 3) if values else None


def raw_annotated_frames(data: Path) -> dict[str, set[int]]:
    """``{video: {prepared frame index annotated in data/raw}}``, empty (negative) frames included, which
    YTVIS files may not record; from data/raw's annotations and data/frames' manifest (empty if missing)."""
    manifest = data / "frames" / "manifest.json"
    if not manifest.is_file():
        return {}
    out = {}
    for video, entry in json.loads(manifest.read_text())["videos"].items():
        path = data / "raw" / "video_annotations" / f"{video}.json"
        if path.is_file():
            keys = json.loads(path.read_text())["frames"]
            out[video] = {i for i, frame in enumerate(entry.get("frames", [])) if str(frame["source_index"]) in keys}
    return out


def video_stats(ytvis_dir: Path, split: str, raw_annotated: dict[str, set[int]]) -> dict:
    data = ytvis.read(ytvis_dir / split / layout.YTVIS_ANNOTATIONS)
    names = {c["id"]: c["name"] for c in data["categories"]}
    videos = {v["id"]: v for v in data["videos"]}
    tracks = defaultdict(list)
    for ann in data["annotations"]:
        tracks[ann["video_id"]].append(ann)
    motion, copy_iou = defaultdict(list), {s: defaultdict(list) for s in STRIDES}
    objects_per_frame, annotated_total, keyframe_only, negatives = [], 0, 0, 0
    for vid, video in videos.items():
        n, height, width = len(video["file_names"]), video["height"], video["width"]
        annotated = set(video.get("annotated_frames") or [])
        annotated |= raw_annotated.get(Path(video["file_names"][0]).parent.as_posix(), set())
        for ann in tracks[vid]:
            annotated.update(f for f, s in enumerate(ann["segmentations"]) if s is not None)
        annotated = sorted(annotated)
        annotated_total += len(annotated)
        keyframe_only += len(annotated) < n
        masks = [
            {
                f: rle_to_mask(to_rle(ann["segmentations"][f], height, width)).astype(bool)
                for f in annotated
                if ann["segmentations"][f] is not None
            }
            for ann in tracks[vid]
        ]
        for f in annotated:
            count = sum(f in m for m in masks)
            objects_per_frame.append(count)
            negatives += count == 0
        for ann, per_frame in zip(tracks[vid], masks):
            name = names[ann["category_id"]]
            for k, f in enumerate(annotated):
                if f not in per_frame:
                    continue
                for s in STRIDES:
                    if k + s >= len(annotated):
                        continue
                    g = per_frame.get(annotated[k + s])
                    iou = 0.0 if g is None else float((per_frame[f] & g).sum() / (per_frame[f] | g).sum())
                    copy_iou[s][name].append(iou)
                nxt = annotated[k + 1] if k + 1 < len(annotated) else None
                if nxt in per_frame:
                    a, b = per_frame[f], per_frame[nxt]
                    inside = all(m[:, [0, -1]].sum() == 0 and m[[0, -1], :].sum() == 0 for m in (a, b))
                    if inside and abs(int(a.sum()) - int(b.sum())) <= 0.1 * max(a.sum(), b.sum()):
                        ya, xa = np.nonzero(a)
                        yb, xb = np.nonzero(b)
                        motion[name].append(float(np.hypot(xb.mean() - xa.mean(), yb.mean() - ya.mean())))
    return {
        "videos": len(videos),
        "keyframe_only_videos": keyframe_only,
        "annotated_frames": annotated_total,
        "negative_frames": negatives,
        "objects_per_annotated_frame": _mean(objects_per_frame),
        "px_moved_per_annotated_frame": {
            k: {"median": _median(v), "p90": round(float(np.percentile(v, 90)), 2), "n": len(v)}
            for k, v in sorted(motion.items())
        },
        "copy_forward_iou": {
            f"stride_{s}": {
                "all": _mean([x for v in copy_iou[s].values() for x in v]),
                **{k: _mean(v) for k, v in sorted(copy_iou[s].items())},
            }
            for s in STRIDES
        },
    }


def image_stats(coco_dir: Path, split: str, resolution: int, patch: int) -> dict:
    data = coco.read(coco_dir / split / layout.COCO_ANNOTATIONS)
    names = {c["id"]: c["name"] for c in data["categories"]}
    images = {im["id"]: im for im in data["images"]}
    per_image = defaultdict(int)
    width_cells, height_cells, area_cells, instances = (
        defaultdict(list),
        defaultdict(list),
        defaultdict(list),
        defaultdict(int),
    )
    for ann in data["annotations"]:
        image = images[ann["image_id"]]
        sx, sy = resolution / image["width"], resolution / image["height"]
        name = names[ann["category_id"]]
        per_image[ann["image_id"]] += 1
        instances[name] += 1
        _, _, w, h = ann["bbox"]
        width_cells[name].append(w * sx / patch)
        height_cells[name].append(h * sy / patch)
        area_cells[name].append(float(np.sqrt(ann["area"] * sx * sy)) / patch)
    return {
        "images": len(images),
        "negative_images": sum(1 for i in images if per_image[i] == 0),
        "instances": dict(sorted(instances.items())),
        "size_cells": {
            k: {
                "bbox_w": _median(width_cells[k]),
                "bbox_h": _median(height_cells[k]),
                "sqrt_area": _median(area_cells[k]),
                "sqrt_area_p10": round(float(np.percentile(area_cells[k], 10)), 2),
            }
            for k in sorted(instances)
        },
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(layout.DATA), help="data folder (default: %(default)s)")
    parser.add_argument("--resolution", type=int, default=224, help="model input side, px (tiny: 224, sam3: 1008)")
    parser.add_argument("--patch", type=int, default=14, help="feature cell = patch size, px of the model input")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args(argv)
    data = Path(args.data)
    result = {}
    raw_annotated = raw_annotated_frames(data)
    for split in layout.SPLITS:
        entry = {}
        if (data / "ytvis" / split / layout.YTVIS_ANNOTATIONS).is_file():
            entry["video"] = video_stats(data / "ytvis", split, raw_annotated)
        if (data / "coco" / split / layout.COCO_ANNOTATIONS).is_file():
            entry["image"] = image_stats(data / "coco", split, args.resolution, args.patch)
        result[split] = entry
    text = json.dumps(result, indent=1, sort_keys=True)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
