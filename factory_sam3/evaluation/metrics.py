"""Evaluation metrics: DAVIS J / F / J&F for semi-supervised tracking, COCO AP through pycocotools,
and YTVIS video mAP through sam3's own evaluator.

Conventions (DAVIS 2017 benchmark):
- J is the region similarity, the IoU of predicted and ground-truth masks; a frame where both are
  empty scores 1 (nothing to find, nothing predicted).
- F is the boundary F-measure: the one-pixel boundaries of both masks are matched within a tolerance
  of ``0.008 x image diagonal`` pixels (ceil), precision = matched predicted boundary / predicted
  boundary, recall = matched true boundary / true boundary, F = 2PR / (P + R).
- J and F of an object are means over its scored frames; a video's score is the mean over its
  objects; the dataset's score is the mean over videos (so a video with many objects does not
  dominate). J&F = (J + F) / 2.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from typing import Any, Iterable, Mapping, Sequence

import cv2
import numpy as np

BOUNDARY_TOLERANCE = 0.008  # fraction of the image diagonal (DAVIS)


# ----------------------------------------------------------------------------------------------
# J: region similarity
# ----------------------------------------------------------------------------------------------


def region_similarity(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two binary masks of the same shape; 1.0 when both are empty."""
    pred = _as_bool(pred)
    gt = _as_bool(gt)
    _check_same_shape(pred, gt)
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return np.count_nonzero(pred & gt) / union


# ----------------------------------------------------------------------------------------------
# F: boundary F-measure
# ----------------------------------------------------------------------------------------------


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary of a binary mask, as DAVIS draws it.

    A pixel is on the boundary when it differs from its right, lower or lower-right neighbour.
    Beyond the image the mask is continued by repeating its last row/column, so the image border
    itself is never a boundary (DAVIS: an object cut by the frame edge has no contour there).
    """
    mask = _as_bool(mask)
    padded = np.pad(mask, ((0, 1), (0, 1)), mode="edge")
    right = padded[:-1, 1:]
    below = padded[1:, :-1]
    below_right = padded[1:, 1:]
    return (mask ^ right) | (mask ^ below) | (mask ^ below_right)


def _disk(radius: int) -> np.ndarray:
    """Structuring element {(dy, dx): dy^2 + dx^2 <= radius^2}."""
    offsets = np.arange(-radius, radius + 1)
    return ((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius * radius).astype(np.uint8)


def boundary_tolerance_px(shape: Sequence[int], tolerance: float = BOUNDARY_TOLERANCE) -> int:
    """Matching distance in pixels: a fraction of the diagonal (rounded up), or pixels if >= 1."""
    if tolerance >= 1:
        return int(tolerance)
    return int(math.ceil(tolerance * math.hypot(shape[0], shape[1])))


def boundary_precision_recall(
    pred: np.ndarray, gt: np.ndarray, tolerance: float = BOUNDARY_TOLERANCE
) -> tuple[float, float]:
    """Boundary precision and recall of ``pred`` against ``gt`` (DAVIS conventions for empty masks)."""
    pred = _as_bool(pred)
    gt = _as_bool(gt)
    _check_same_shape(pred, gt)
    pred_boundary = boundary_map(pred)
    gt_boundary = boundary_map(gt)
    n_pred = np.count_nonzero(pred_boundary)
    n_gt = np.count_nonzero(gt_boundary)
    if n_pred == 0 and n_gt == 0:
        return 1.0, 1.0
    if n_pred == 0:
        return 1.0, 0.0
    if n_gt == 0:
        return 0.0, 1.0
    disk = _disk(boundary_tolerance_px(pred.shape, tolerance))
    near_gt = cv2.dilate(gt_boundary.astype(np.uint8), disk).astype(bool)
    near_pred = cv2.dilate(pred_boundary.astype(np.uint8), disk).astype(bool)
    precision = np.count_nonzero(pred_boundary & near_gt) / n_pred
    recall = np.count_nonzero(gt_boundary & near_pred) / n_gt
    return float(precision), float(recall)


def boundary_f_measure(pred: np.ndarray, gt: np.ndarray, tolerance: float = BOUNDARY_TOLERANCE) -> float:
    """DAVIS F: harmonic mean of boundary precision and recall (0 when both are 0)."""
    precision, recall = boundary_precision_recall(pred, gt, tolerance)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


# ----------------------------------------------------------------------------------------------
# J&F aggregation
# ----------------------------------------------------------------------------------------------


def score_object(pred_masks: Iterable[np.ndarray], gt_masks: Iterable[np.ndarray]) -> dict[str, float]:
    """J, F and J&F of one object over the frames given (the caller chooses which frames count)."""
    js, fs = [], []
    for pred, gt in zip(pred_masks, gt_masks, strict=True):
        js.append(region_similarity(pred, gt))
        fs.append(boundary_f_measure(pred, gt))
    if not js:
        raise ValueError("no frames to score")
    j = float(np.mean(js))
    f = float(np.mean(fs))
    return {"J": j, "F": f, "J&F": (j + f) / 2, "frames": len(js)}


def aggregate_video_scores(per_video: Mapping[Any, Sequence[Mapping[str, float]]]) -> dict[str, float]:
    """Mean over objects within a video, then mean over videos, for J, F and J&F.

    ``per_video`` maps a video to the score dicts of its objects (from :func:`score_object`).
    Videos without any scored object are left out; with none at all the result is empty.
    """
    video_means = []
    for objects in per_video.values():
        if not objects:
            continue
        video_means.append({k: float(np.mean([o[k] for o in objects])) for k in ("J", "F")})
    if not video_means:
        return {}
    j = float(np.mean([v["J"] for v in video_means]))
    f = float(np.mean([v["F"] for v in video_means]))
    return {"J": j, "F": f, "J&F": (j + f) / 2, "videos": len(video_means),
            "objects": int(sum(len(o) for o in per_video.values()))}


# ----------------------------------------------------------------------------------------------
# COCO AP (pycocotools, the evaluator sam3 itself uses)
# ----------------------------------------------------------------------------------------------


def coco_ap(gt: Mapping[str, Any], detections: Sequence[Mapping[str, Any]], iou_type: str = "segm") -> dict[str, Any]:
    """COCO AP, AP50, AP75 and per-class AP of ``detections`` against the COCO dict ``gt``.

    ``detections`` are COCO results: {"image_id", "category_id", "score", "segmentation" (RLE) and/or
    "bbox" [x, y, w, h]}. Values pycocotools reports as -1 (no ground truth to score) become None.
    An empty detection list scores 0 wherever there is ground truth.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if iou_type not in ("segm", "bbox"):
        raise ValueError(f"iou_type must be segm or bbox, not {iou_type!r}")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(dict(gt))
        coco_gt.createIndex()
        coco_dt = _load_results(coco_gt, detections, iou_type)
        evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    result: dict[str, Any] = {"AP": _none_if_missing(stats[0]), "AP50": _none_if_missing(stats[1]),
                              "AP75": _none_if_missing(stats[2])}
    # precision[T, R, K, A, M]: IoU thresholds x recall points x classes x area ranges x maxDets.
    precision = evaluator.eval["precision"]
    area_all = evaluator.params.areaRngLbl.index("all")
    max_dets = len(evaluator.params.maxDets) - 1
    per_class = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        values = precision[:, :, k, area_all, max_dets]
        values = values[values > -1]
        per_class[coco_gt.cats[cat_id]["name"]] = float(values.mean()) if values.size else None
    result["per_class"] = per_class
    return result


def _load_results(coco_gt, detections: Sequence[Mapping[str, Any]], iou_type: str):
    from pycocotools.coco import COCO

    detections = [dict(d) for d in detections]
    if detections:
        if iou_type == "bbox":
            # loadRes prefers bboxes when present; for segm it derives bbox/area from the masks.
            detections = [{k: v for k, v in d.items() if k != "segmentation"} for d in detections]
        else:
            detections = [{k: v for k, v in d.items() if k != "bbox"} for d in detections]
        return coco_gt.loadRes(detections)
    # pycocotools' loadRes cannot take an empty list: build an empty result set instead.
    empty = COCO()
    empty.dataset = {"images": list(coco_gt.dataset["images"]),
                     "categories": copy.deepcopy(coco_gt.dataset["categories"]), "annotations": []}
    empty.createIndex()
    return empty


def _none_if_missing(value: float) -> float | None:
    return None if value < 0 else float(value)


# ----------------------------------------------------------------------------------------------
# YTVIS mAP (sam3.eval.ytvis_eval)
# ----------------------------------------------------------------------------------------------


def ytvis_map(gt: Mapping[str, Any], tracks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Video instance segmentation mAP with sam3's YTVIS evaluator (masklet IoU over the whole video).

    ``gt`` is a YTVIS dict (videos / annotations with per-frame "segmentations", None where absent);
    ``tracks`` are predictions {"video_id", "category_id", "score", "segmentations": [RLE or None
    per frame]}. Returns mAP, AP50, AP75 (None where there is no ground truth).
    """
    import pycocotools.mask as mask_util
    from sam3.eval.ytvis_coco_wrapper import YTVIS
    from sam3.eval.ytvis_eval import YTVISeval

    gt = copy.deepcopy(dict(gt))
    with contextlib.redirect_stdout(io.StringIO()):
        ytvis_gt = YTVIS(ignore_gt_cats=False)
        ytvis_gt.dataset = gt
        ytvis_gt.createIndex()
        results = []
        for track in tracks:
            segs = list(track["segmentations"])
            bboxes = [None if s is None else [float(x) for x in mask_util.toBbox(s)] for s in segs]
            areas = [0 if s is None else int(mask_util.area(s)) for s in segs]
            results.append({"image_id": int(track["video_id"]), "category_id": int(track["category_id"]),
                            "score": float(track["score"]), "segmentations": segs, "bboxes": bboxes,
                            "areas": areas})
        if results:
            ytvis_dt = ytvis_gt.loadRes(results)
        else:
            ytvis_dt = YTVIS(ignore_gt_cats=False)
            ytvis_dt.dataset = {"videos": list(ytvis_gt.dataset["images"]),
                                "categories": copy.deepcopy(ytvis_gt.dataset["categories"]), "annotations": []}
            ytvis_dt.createIndex()
        evaluator = YTVISeval(ytvis_gt, ytvis_dt, iouType="segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return {"mAP": _none_if_missing(stats[0]), "AP50": _none_if_missing(stats[1]),
            "AP75": _none_if_missing(stats[2])}


# ----------------------------------------------------------------------------------------------


def _as_bool(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
