"""YTVIS-style video instance JSON (``<split>/annotations.json`` beside ``<video>/00000.jpg ...``):
record builders, reader and atomic writer. Per-frame lists hold ``None`` (JSON ``null``) where the object is
absent or the frame is not annotated."""

from __future__ import annotations

import json
import os

from factory_sam3.atomic import atomic_file
from factory_sam3.formats.coco import read_json

INFO = {"description": "Factory video dataset for SAM3 fine-tuning (Stage 2, tracking)", "version": "1.0"}


def video_record(video_id: int, file_names: list[str], width: int, height: int) -> dict:
    return {
        "id": int(video_id),
        "file_names": list(file_names),
        "length": len(file_names),
        "width": int(width),
        "height": int(height),
    }


def track_record(
    ann_id: int,
    video_id: int,
    category_id: int,
    segmentations: list[dict | None],
    bboxes: list[list[float] | None],
    areas: list[int | None],
) -> dict:
    """One object over the whole video: the three per-frame lists have the video's length."""
    if not len(segmentations) == len(bboxes) == len(areas):
        raise ValueError("segmentations, bboxes and areas must have one entry per frame")
    return {
        "id": int(ann_id),
        "video_id": int(video_id),
        "category_id": int(category_id),
        "segmentations": segmentations,
        "bboxes": bboxes,
        "areas": areas,
        "iscrowd": 0,
    }


def dataset(videos: list[dict], annotations: list[dict], categories: list[dict]) -> dict:
    return {"info": dict(INFO), "videos": videos, "annotations": annotations, "categories": categories}


def write(path: str | os.PathLike, data: dict) -> None:
    with atomic_file(path) as handle:
        json.dump(data, handle, separators=(",", ":"))
        handle.write("\n")


def read(path: str | os.PathLike) -> dict:
    return read_json(path, required=("videos", "annotations", "categories"))
