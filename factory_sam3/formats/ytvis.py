"""YTVIS-style video instance JSON (``<split>/annotations.json`` beside ``<video>/00000.jpg ...``):
record builders, reader and atomic writer. Per-frame lists hold ``None`` (JSON ``null``) where the object is
absent or the frame is not annotated; the video's ``annotated_frames`` (0-based indices into ``file_names``, an
addition of ours that sam3's and pycocotools-style YTVIS readers ignore) tells the two apart: an annotated frame
with ``null`` is a true negative, a frame not listed was never looked at."""

from __future__ import annotations

import os

from factory_sam3.io import read_json_object, write_json

INFO = {"description": "Factory video dataset for SAM3 fine-tuning (Stage 2, tracking)", "version": "1.0"}


ANNOTATED_FRAMES = "annotated_frames"


def video_record(
    video_id: int, file_names: list[str], width: int, height: int, annotated_frames: list[int] | None = None
) -> dict:
    record = {
        "id": int(video_id),
        "file_names": list(file_names),
        "length": len(file_names),
        "width": int(width),
        "height": int(height),
    }
    if annotated_frames is not None:
        record[ANNOTATED_FRAMES] = sorted(int(t) for t in annotated_frames)
    return record


def annotated_frames(video: dict, tracks: list[dict]) -> list[int]:
    """The frames of ``video`` that were annotated (objects present or not), sorted: its
    ``annotated_frames`` and every frame a track of the video has a mask on (a mask is an annotation).

    Files without ``annotated_frames`` (older to_ytvis, other tools) cannot tell an empty annotated frame
    from an unannotated one: there only the frames with a mask count."""
    with_masks = {t for track in tracks for t, seg in enumerate(track["segmentations"]) if seg is not None}
    return sorted(with_masks | {int(t) for t in video.get(ANNOTATED_FRAMES, ())})


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
    """Write compact JSON atomically (as formats.coco.write)."""
    write_json(path, data, indent=None, sort_keys=False)


def read(path: str | os.PathLike) -> dict:
    return read_json_object(path, required=("videos", "annotations", "categories"))
