"""What ``predict`` writes: overlays (masks, ids, class names, scores) as a video or PNGs, and the masks as
COCO results (images) or YouTube-VIS results (video), compressed RLE, which pycocotools and sam3's YTVIS
evaluator load as they are."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from factory_sam3.errors import UserError
from factory_sam3.evaluation.pictures import colour, draw_masks

COCO_RESULTS = "coco_results.json"  # [{"image_id", "category_id", "score", "segmentation", "bbox"}]
COCO_IMAGES = "coco_images.json"  # {"images", "categories"}: what the results' ids refer to
YTVIS_RESULTS = "ytvis_results.json"  # [{"video_id", "category_id", "score", "segmentations", ...}]
YTVIS_VIDEOS = "ytvis_videos.json"  # {"videos", "categories"}
OVERLAY_VIDEO = "overlay.mp4"
OVERLAY_DIR = "overlay"
SUMMARY = "summary.json"


def draw_labelled(image: np.ndarray, instances: Sequence[Mapping]) -> np.ndarray:
    """``image`` with each instance's mask tinted and outlined in its colour and a label
    (``"#3 screw 0.87"``) at its top-left corner. ``instances``: {"mask", "colour", "label"}."""
    out = draw_masks(image, [(inst["mask"], inst["colour"]) for inst in instances])
    scale = max(0.35, min(out.shape[:2]) / 700)
    thickness = max(1, int(round(scale * 2)))
    for inst in instances:
        ys, xs = np.nonzero(inst["mask"])
        if not len(xs):
            continue
        (tw, th), base = cv2.getTextSize(inst["label"], cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        x = int(min(xs.min(), max(out.shape[1] - tw - 2, 0)))
        y = int(max(ys.min() - 3, th + 2))
        cv2.rectangle(out, (x, y - th - 2), (x + tw + 2, y + base), (0, 0, 0), -1)
        cv2.putText(
            out,
            inst["label"],
            (x + 1, y - 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            tuple(int(c) for c in inst["colour"]),
            thickness,
            cv2.LINE_AA,
        )
    return out


def track_instances(masks: Mapping[int, np.ndarray], tracks: Mapping) -> list[dict]:
    """Overlay instances of one video frame: a colour per track id, labelled id, class and score."""
    return [
        {"mask": mask, "colour": colour(obj - 1), "label": f"#{obj} {tracks[obj].category} {tracks[obj].score:.2f}"}
        for obj, mask in masks.items()
    ]


class OverlayWriter:
    """Overlay frames written as they come: an MP4 (``overlay.mp4``) or numbered PNGs (``overlay/``)."""

    def __init__(self, out_dir: Path, fmt: str, fps: float, width: int, height: int):
        self.fmt = fmt
        self.count = 0
        if fmt == "png":
            self.path = out_dir / OVERLAY_DIR
            self.path.mkdir()
            self.writer = None
        else:
            self.path = out_dir / OVERLAY_VIDEO
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
            if not self.writer.isOpened():
                raise UserError("OpenCV cannot write an MP4 here (no mp4v encoder): use --overlay png", self.path)

    def write(self, rgb: np.ndarray) -> None:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if self.writer is None:
            if not cv2.imwrite(str(self.path / f"{self.count:05d}.png"), bgr):
                raise UserError("cannot write the overlay PNG", self.path / f"{self.count:05d}.png")
        else:
            self.writer.write(bgr)
        self.count += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def write_json(path: Path, data, compact: bool = True) -> None:
    """JSON, compact for results files (they get large); the folder it lands in is renamed into place as a
    whole, so the file itself needs no temporary name."""
    with open(path, "w") as handle:
        json.dump(data, handle, separators=(",", ":") if compact else None, indent=None if compact else 2)
        handle.write("\n")
