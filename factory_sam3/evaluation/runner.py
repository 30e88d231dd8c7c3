"""Evaluate a model pair (image model, video tracker) on the COCO and YTVIS test splits.

The runner knows nothing about how a model predicts: it takes two callables, so the same code scores
the baseline and the fine-tuned weights (and fake predictors in tests):

- ``predict_image(image, class_names) -> [{"category": name, "score": float, "mask": HxW bool,
  "box": [x0, y0, x1, y1] px (optional)}, ...]`` with ``image`` an RGB uint8 HxWx3 array and the class
  names used as text prompts.
- ``track(frames, prompts) -> {object_id: [HxW bool mask or None per frame]}`` with ``frames`` a list of
  RGB uint8 arrays and ``prompts`` ``{object_id: (frame_index, HxW bool mask)}`` (semi-supervised: each
  object is given by its first visible ground-truth mask and must be followed from there on).

Scores: COCO segm/bbox AP (pycocotools) on the images, with a bootstrap interval over images; J, F,
J&F with the DAVIS 2017 conventions (see factory_sam3.evaluation.metrics: every annotated frame after
the prompt frame except the last annotated one, true negatives included, objects pooled over the split)
with a bootstrap interval over videos; text-prompted video instance segmentation (the image model finds
objects by class name on keyframes, the tracker follows them) scored with YTVIS mAP by sam3's own
evaluator on annotated frames only; speed as images/s and frames/s of the model calls alone (metric
code not timed). Every number comes with its n (images, instances, videos, objects, frames).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from factory_sam3.errors import UserError
from factory_sam3.evaluation import metrics
from factory_sam3.evaluation.pictures import overlay_figure, tracking_gif
from factory_sam3.formats import coco as coco_format
from factory_sam3.formats import ytvis as ytvis_format
from factory_sam3.formats.rle import SegmentationError, mask_to_rle, rle_to_mask, to_rle
from factory_sam3.layout import COCO_ANNOTATIONS, YTVIS_ANNOTATIONS

PredictImage = Callable[[np.ndarray, Sequence[str]], Sequence[Mapping[str, Any]]]
Track = Callable[[Sequence[np.ndarray], Mapping[Any, tuple[int, np.ndarray]]], Mapping[Any, Sequence[Any]]]


@dataclass
class EvalSettings:
    max_images: int = 0  # 0 = every test image
    max_videos: int = 0  # 0 = every test video
    max_detections: int = 100  # per image, highest scores first (COCO's maxDets)
    min_score: float = 0.0  # detections below are dropped before AP
    overlay_min_score: float = 0.5  # predictions drawn in the overlays
    num_overlays: int = 4
    gif_frames: int = 24
    vis: bool = True  # text-prompted video instance segmentation (detector + tracker)
    vis_keyframe_stride: int = 8  # the detector looks for new objects every N-th frame
    vis_min_score: float | None = 0.5  # detections that start a track (None: calibrated on the valid split)
    vis_max_tracks: int = 20  # per video
    bootstrap_samples: int = 1000  # resamples for the J / F / J&F interval (over videos); 0 = none
    bootstrap_samples_images: int = 200  # resamples for the segm AP interval (over images); 0 = none
    bootstrap_seed: int = 0
    pictures_dir: Path | None = None
    label: str = ""  # "baseline" / "finetuned": names the pictures
    progress: bool = True  # progress bars (off in pool workers: their bars would overwrite each other)


def _read_rgb(path: Path, file: Path, record: str) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read image {path}: {err}", file, record) from None


def _decode(segmentation, height: int, width: int, file: Path, record: str) -> np.ndarray:
    try:
        return rle_to_mask(to_rle(segmentation, height, width)).astype(bool)
    except SegmentationError as err:
        raise UserError(str(err), file, record) from None


# ---------------------------------------------------------------------------------------------- images


def first_records(data: dict, kind: str, limit: int, ann_file: Path) -> tuple[dict, list[dict]]:
    """``data`` restricted to its first ``limit`` ``kind`` records by id (0 = all: "images" of a COCO file,
    "videos" of a YTVIS one) and the annotations on them; and those records. None is an error naming the file."""
    records = sorted(data[kind], key=lambda record: record["id"])
    if limit:
        records = records[:limit]
    if not records:
        raise UserError(f"the test split has no {kind}", ann_file)
    keep, link = {record["id"] for record in records}, {"images": "image_id", "videos": "video_id"}[kind]
    return dict(data, **{kind: records, "annotations": [a for a in data["annotations"] if a[link] in keep]}), records


def load_coco_split(split_dir: str | Path, max_images: int = 0) -> tuple[dict, list[dict]]:
    """The COCO JSON of a split (restricted to the first ``max_images`` images by id) and those images."""
    ann_file = Path(split_dir) / COCO_ANNOTATIONS
    return first_records(coco_format.read(ann_file), "images", max_images, ann_file)


def evaluate_images(predict_image: PredictImage, split_dir: str | Path, settings: EvalSettings) -> dict[str, Any]:
    """COCO AP of ``predict_image`` on a split, with images/s and overlay PNGs of the first images."""
    split_dir = Path(split_dir)
    ann_file = split_dir / COCO_ANNOTATIONS
    gt, images = load_coco_split(split_dir, settings.max_images)
    name_to_id, id_to_name = coco_format.category_maps(gt["categories"])
    class_names = [c["name"] for c in sorted(gt["categories"], key=lambda c: c["id"])]
    by_image: dict[int, list[dict]] = {}
    for ann in gt["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)

    detections: list[dict] = []
    model_seconds = 0.0
    overlays: list[str] = []
    # pictures of the first images that show something (a negative makes a dull overlay)
    overlay_ids = [im["id"] for im in images if by_image.get(im["id"])][: settings.num_overlays]
    for image_info in tqdm(images, desc=f"images {settings.label}".strip(), leave=False, disable=not settings.progress):
        record = f"image {image_info['id']} ({image_info['file_name']})"
        image = _read_rgb(split_dir / image_info["file_name"], ann_file, record)
        start = time.perf_counter()
        predictions = list(predict_image(image, class_names))
        model_seconds += time.perf_counter() - start
        predictions = [p for p in predictions if float(p["score"]) >= settings.min_score]
        predictions.sort(key=lambda p: -float(p["score"]))
        predictions = predictions[: settings.max_detections]
        for pred in predictions:
            if pred["category"] not in name_to_id:
                raise ValueError(f"model predicted unknown class {pred['category']!r}")
            mask = np.asarray(pred["mask"], dtype=bool)
            if mask.shape != image.shape[:2]:
                raise ValueError(f"predicted mask {mask.shape} differs from image size {image.shape[:2]}")
            rle = mask_to_rle(mask)
            # bbox AP scores the model's own box where it has one (SAM3's box head), else the mask's
            box = pred.get("box")
            bbox = (
                _mask_bbox(mask)
                if box is None
                else [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]
            )
            detections.append(
                {
                    "image_id": image_info["id"],
                    "category_id": name_to_id[pred["category"]],
                    "score": float(pred["score"]),
                    "segmentation": rle,
                    "bbox": bbox,
                }
            )
        if settings.pictures_dir is not None and image_info["id"] in overlay_ids:
            h, w = image.shape[:2]
            gt_instances = [
                {
                    "category": id_to_name[a["category_id"]],
                    "mask": _decode(a["segmentation"], h, w, ann_file, f"annotation {a['id']}"),
                }
                for a in by_image.get(image_info["id"], [])
            ]
            shown = [
                {"category": p["category"], "mask": np.asarray(p["mask"], bool), "score": float(p["score"])}
                for p in predictions
                if float(p["score"]) >= settings.overlay_min_score
            ]
            number = overlay_ids.index(image_info["id"])
            path = Path(settings.pictures_dir) / f"overlay_{settings.label or 'model'}_{number:02d}.png"
            overlay_figure(
                image,
                gt_instances,
                shown,
                class_names,
                path,
                title=f"{settings.label}: {image_info['file_name']} (predictions >= {settings.overlay_min_score:g})",
            )
            overlays.append(str(path))

    segm = metrics.coco_ap(
        gt, detections, "segm", bootstrap=settings.bootstrap_samples_images, seed=settings.bootstrap_seed
    )
    bbox = metrics.coco_ap(gt, detections, "bbox")
    result: dict[str, Any] = {
        "segm_AP": segm["AP"],
        "segm_AP50": segm["AP50"],
        "segm_AP75": segm["AP75"],
        "bbox_AP": bbox["AP"],
        "bbox_AP50": bbox["AP50"],
        "bbox_AP75": bbox["AP75"],
        "segm_AP_per_class": segm["per_class"],
        "images": len(images),
        "instances": len(gt["annotations"]),
        "detections": len(detections),
        "images_per_s": len(images) / model_seconds if model_seconds > 0 else None,
    }
    if "AP_ci95" in segm:
        result["segm_AP_ci95"] = segm["AP_ci95"]
    return {"metrics": result, "pictures": overlays}


def _mask_bbox(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


# ---------------------------------------------------------------------------------------------- videos


def load_ytvis_split(split_dir: str | Path, max_videos: int = 0) -> tuple[dict, list[dict]]:
    """The YTVIS JSON of a split (restricted to the first ``max_videos`` videos by id) and those videos."""
    ann_file = Path(split_dir) / YTVIS_ANNOTATIONS
    return first_records(ytvis_format.read(ann_file), "videos", max_videos, ann_file)


def evaluate_videos(track: Track, split_dir: str | Path, settings: EvalSettings) -> dict[str, Any]:
    """Semi-supervised tracking: J, F, J&F with the DAVIS 2017 conventions and their bootstrap interval,
    frames/s (video frames per second of tracker calls, all objects of a video together), and a GIF of
    the first video. ``per_video`` holds each video's object scores (for paired comparisons)."""
    split_dir = Path(split_dir)
    ann_file = split_dir / YTVIS_ANNOTATIONS
    gt, videos = load_ytvis_split(split_dir, settings.max_videos)
    _, id_to_name = coco_format.category_maps(gt["categories"])
    per_video: dict[int, list[dict]] = {}
    frames_tracked = 0
    model_seconds = 0.0
    gif = None
    for video in tqdm(videos, desc=f"videos {settings.label}".strip(), leave=False, disable=not settings.progress):
        h, w = int(video["height"]), int(video["width"])
        tracks = [a for a in gt["annotations"] if a["video_id"] == video["id"]]
        gt_masks: dict[int, list[np.ndarray | None]] = {}
        prompts: dict[int, tuple[int, np.ndarray]] = {}
        for ann in tracks:
            record = f"video {video['id']} annotation {ann['id']}"
            if len(ann["segmentations"]) != len(video["file_names"]):
                raise UserError("segmentations and file_names differ in length", ann_file, record)
            masks = [None if s is None else _decode(s, h, w, ann_file, record) for s in ann["segmentations"]]
            visible = [t for t, m in enumerate(masks) if m is not None and m.any()]
            if not visible:
                continue  # never visible: nothing to prompt with
            gt_masks[ann["id"]] = masks
            prompts[ann["id"]] = (visible[0], masks[visible[0]])
        if not prompts:
            continue
        annotated = _annotated_frames(video, tracks, ann_file)
        frames = [
            _read_rgb(split_dir / name, ann_file, f"video {video['id']} frame {name}") for name in video["file_names"]
        ]
        start = time.perf_counter()
        predicted = track(frames, prompts)
        model_seconds += time.perf_counter() - start
        frames_tracked += len(frames)

        scores = []
        empty = np.zeros((h, w), bool)
        for obj_id, masks in gt_masks.items():
            pred = list(predicted.get(obj_id, [None] * len(frames)))
            if len(pred) != len(frames):
                raise ValueError(f"tracker returned {len(pred)} masks for {len(frames)} frames")
            # DAVIS: annotated frames after the prompt, not the last; absent there = empty ground truth
            scored = metrics.davis_scored_frames(prompts[obj_id][0], annotated)
            if scored:
                scores.append(
                    metrics.score_object(
                        [empty if pred[t] is None else np.asarray(pred[t], dtype=bool) for t in scored],
                        [empty if masks[t] is None else masks[t] for t in scored],
                    )
                )
        per_video[video["id"]] = scores
        if gif is None and settings.pictures_dir is not None:
            count = min(len(frames), settings.gif_frames)
            labels = {
                obj: f"{id_to_name[next(a for a in tracks if a['id'] == obj)['category_id']]} #{obj}"
                for obj in gt_masks
            }
            gif = tracking_gif(
                frames[:count],
                {o: m[:count] for o, m in gt_masks.items()},
                {o: list(predicted.get(o, [None] * len(frames)))[:count] for o in gt_masks},
                Path(settings.pictures_dir) / f"tracking_{settings.label or 'model'}.gif",
                labels=labels,
            )
    summary = metrics.aggregate_objects(per_video)
    result = {
        "J": summary.get("J"),
        "F": summary.get("F"),
        "J&F": summary.get("J&F"),
        **metrics.bootstrap_video_ci(per_video, settings.bootstrap_samples, settings.bootstrap_seed),
        "videos": summary.get("videos", 0),
        "objects": summary.get("objects", 0),
        "frames": summary.get("frames", 0),
        "J_present": summary.get("J_present"),
        "empty_when_absent": summary.get("empty_when_absent"),
        "present_frames": summary.get("present_frames", 0),
        "absent_frames": summary.get("absent_frames", 0),
        "frames_per_s": frames_tracked / model_seconds if model_seconds > 0 else None,
    }
    return {"metrics": result, "per_video": per_video, "pictures": [str(gif)] if gif else []}


def _annotated_frames(video: Mapping[str, Any], tracks: Sequence[Mapping[str, Any]], ann_file: Path) -> list[int]:
    frames = ytvis_format.annotated_frames(video, tracks)
    if frames and not (0 <= frames[0] and frames[-1] < len(video["file_names"])):
        raise UserError(
            f"'{ytvis_format.ANNOTATED_FRAMES}' lists frames outside 0..{len(video['file_names']) - 1}",
            ann_file,
            f"video {video['id']}",
        )
    return frames


def copy_prompt_tracker(frames, prompts):
    """Reference "tracker" without a model: the prompt mask copied to every later frame."""
    return {obj: [None if t < start else mask for t in range(len(frames))] for obj, (start, mask) in prompts.items()}


def empty_tracker(frames, prompts):
    """Reference "tracker" that predicts nothing: scores only on frames where the object is absent."""
    return {obj: [None] * len(frames) for obj in prompts}


# ------------------------------------------------------------------------------ video instance segmentation


def evaluate_vis(
    predict_image: PredictImage, track: Track, split_dir: str | Path, settings: EvalSettings
) -> dict[str, Any]:
    """Text-prompted video instance segmentation, scored with YTVIS mAP (sam3.eval.ytvis_eval).

    The detect-then-track loop is ``factory_sam3.inference.vis`` (the one ``predict`` runs). Its detection
    threshold is ``vis_min_score``, or (``None``) the one with the best detection F1 on the validation
    split beside ``split_dir``; when no threshold finds any object there, the mAP is ``None`` with the reason.
    """
    from factory_sam3.inference import vis

    split_dir = Path(split_dir)
    ann_file = split_dir / YTVIS_ANNOTATIONS
    gt, videos = load_ytvis_split(split_dir, settings.max_videos)
    name_to_id, _ = coco_format.category_maps(gt["categories"])
    class_names = [c["name"] for c in sorted(gt["categories"], key=lambda c: c["id"])]
    min_score, note = settings.vis_min_score, None
    if min_score is None:
        calibration = vis.calibrate_on_split(predict_image, split_dir.parent / "valid", class_names)
        min_score, note = calibration.min_score, calibration.reason
        if min_score is None:
            return {
                "metrics": {
                    "vis_mAP": None,
                    "vis_AP50": None,
                    "vis_tracks": 0,
                    "vis_min_score": None,
                    "vis_note": note,
                },
                "masklets": [],
            }
    vis_settings = vis.VisSettings(
        keyframe_stride=settings.vis_keyframe_stride, min_score=min_score, max_tracks=settings.vis_max_tracks
    )
    masklets: list[dict] = []
    for video in tqdm(videos, desc=f"vis {settings.label}".strip(), leave=False, disable=not settings.progress):
        collector = vis.MaskletCollector()
        frames = (
            _read_rgb(split_dir / name, ann_file, f"video {video['id']} frame {name}") for name in video["file_names"]
        )
        session = vis.tracker_session(track, len(video["file_names"]))
        for result in vis.segment_video(frames, predict_image, session, class_names, vis_settings):
            collector.add(result)
        masklets += collector.masklets(video["id"], name_to_id)
    ytvis = metrics.ytvis_map(gt, masklets)  # on annotated frames only
    annotated = sum(
        len(_annotated_frames(v, [a for a in gt["annotations"] if a["video_id"] == v["id"]], ann_file)) for v in videos
    )
    result = {
        "vis_mAP": ytvis["mAP"],
        "vis_AP50": ytvis["AP50"],
        "vis_tracks": len(masklets),
        "vis_min_score": min_score,
        "vis_videos": len(videos),
        "vis_gt_tracks": len(gt["annotations"]),
        "vis_annotated_frames": annotated,
    }
    if note:
        result["vis_note"] = note
    return {"metrics": result, "masklets": masklets}
