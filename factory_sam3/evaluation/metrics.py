"""Evaluation metrics: DAVIS J / F / J&F for semi-supervised tracking, COCO AP through pycocotools,
and YTVIS video mAP through sam3's own evaluator.

Conventions (DAVIS 2017 semi-supervised benchmark, davis2017-evaluation):
- J is the region similarity, the IoU of predicted and ground-truth masks; a frame where both are
  empty scores 1 (nothing to find, nothing predicted), anything predicted where the object is absent 0.
  ``region_similarity`` is the package's one mask IoU, with this one empty-mask rule: evaluation, Stage 2's
  held-out and cross-object IoU, pretraining's gate and VIS's detection matching all use it.
- F is the boundary F-measure: the one-pixel boundaries of both masks are matched within a tolerance
  of ``0.008 x image diagonal`` pixels (ceil), precision = matched predicted boundary / predicted
  boundary, recall = matched true boundary / true boundary, F = 2PR / (P + R); both boundaries empty
  scores 1, one of them empty 0.
- Scored frames (:func:`davis_scored_frames`): every annotated frame of the sequence after the object's
  prompt frame, except the sequence's last annotated frame (DAVIS scores ``masks[1:-1]``). A frame where
  the object is absent but the frame is annotated is scored (a true negative, or a false positive).
- J and F of an object are means over its scored frames; the split's J and F are means over all its
  objects, pooled across videos (DAVIS 2017: ``np.mean(J["M"])`` over every object of every sequence).
  J&F = (J + F) / 2. The spread is a percentile bootstrap over videos (:func:`bootstrap_video_ci`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

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
    present_j, absent_empty = [], []  # where J comes from: frames with the object, frames without it
    for pred, gt in zip(pred_masks, gt_masks, strict=True):
        js.append(region_similarity(pred, gt))
        fs.append(boundary_f_measure(pred, gt))
        if np.any(gt):
            present_j.append(js[-1])
        else:
            absent_empty.append(not np.any(pred))
    if not js:
        raise ValueError("no frames to score")
    j = float(np.mean(js))
    f = float(np.mean(fs))
    return {
        "J": j,
        "F": f,
        "J&F": (j + f) / 2,
        "frames": len(js),
        "present_frames": len(present_j),
        "present_J_sum": float(sum(present_j)),
        "absent_frames": len(absent_empty),
        "absent_empty": int(sum(absent_empty)),
    }


def davis_scored_frames(prompt_frame: int, annotated_frames: Iterable[int]) -> list[int]:
    """The frames DAVIS scores for an object prompted on ``prompt_frame``: annotated frames after it,
    without the sequence's last annotated frame (DAVIS: ``masks[1:-1]``, the first being the prompt)."""
    annotated = sorted(set(int(t) for t in annotated_frames))
    if not annotated:
        return []
    last = annotated[-1]
    return [t for t in annotated if prompt_frame < t < last]


def aggregate_objects(per_video: Mapping[Any, Sequence[Mapping[str, float]]]) -> dict[str, float]:
    """J, F and J&F as means over every object of the split, pooled across videos (DAVIS 2017).

    ``per_video`` maps a video to the score dicts of its objects (from :func:`score_object`); it keeps the
    videos apart only for the counts and the bootstrap. With no scored object the result is empty.
    """
    objects = [o for scores in per_video.values() for o in scores]
    if not objects:
        return {}
    j = float(np.mean([o["J"] for o in objects]))
    f = float(np.mean([o["F"] for o in objects]))
    result = {
        "J": j,
        "F": f,
        "J&F": (j + f) / 2,
        "videos": sum(1 for s in per_video.values() if s),
        "objects": len(objects),
        "frames": int(sum(o["frames"] for o in objects)),
    }
    # A diagnosis of J, frames pooled: J where the object is there, and how often the tracker predicts nothing
    # where it is gone (a tracker that never lets go of its object, or jumps to a look-alike, scores 0 there)
    present = sum(o.get("present_frames", 0) for o in objects)
    absent = sum(o.get("absent_frames", 0) for o in objects)
    result["present_frames"], result["absent_frames"] = int(present), int(absent)
    result["J_present"] = float(sum(o.get("present_J_sum", 0.0) for o in objects) / present) if present else None
    result["empty_when_absent"] = float(sum(o.get("absent_empty", 0) for o in objects) / absent) if absent else None
    return result


def bootstrap_video_ci(
    per_video: Mapping[Any, Sequence[Mapping[str, float]]], samples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, list[float]]:
    """Percentile bootstrap interval of the pooled J, F and J&F, resampling whole videos with replacement
    (objects of one video are not independent). Keys ``J_ci95`` etc.; empty without scored objects."""
    videos = [scores for scores in per_video.values() if scores]
    if not videos or samples < 1:
        return {}
    sums = {k: np.array([sum(o[k] for o in v) for v in videos]) for k in ("J", "F")}
    return _pooled_video_bootstrap(sums, np.array([len(v) for v in videos]), samples, seed, level)


def bootstrap_gain_ci(
    before: Mapping[Any, Sequence[Mapping[str, float]]],
    after: Mapping[Any, Sequence[Mapping[str, float]]],
    samples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, list[float]]:
    """Paired percentile bootstrap of ``after - before`` for the pooled J, F and J&F: both models are scored
    on the same resampled videos (same objects, same frames), so the interval is that of the difference,
    narrower than the two separate intervals suggest. Empty unless both scored the same videos and objects."""
    keys = [v for v in before if before[v]]
    if not keys or samples < 1 or sorted(keys) != sorted(v for v in after if after[v]):
        return {}
    if any(len(before[v]) != len(after[v]) for v in keys):
        return {}
    diff = {k: np.array([sum(o[k] for o in after[v]) - sum(o[k] for o in before[v]) for v in keys]) for k in ("J", "F")}
    return _pooled_video_bootstrap(diff, np.array([len(before[v]) for v in keys]), samples, seed, level)


def _pooled_video_bootstrap(
    sums: Mapping[str, np.ndarray], counts: np.ndarray, samples: int, seed: int, level: float
) -> dict[str, list[float]]:
    """Resample videos with replacement; per sample, the object-pooled mean of each per-video sum of J and F."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(counts), size=(samples, len(counts)))
    n = counts[picks].sum(axis=1)
    j = sums["J"][picks].sum(axis=1) / n
    f = sums["F"][picks].sum(axis=1) / n
    name = f"ci{round(level * 100)}"
    return {f"{k}_{name}": percentile_interval(v, level) for k, v in (("J", j), ("F", f), ("J&F", (j + f) / 2))}


def percentile_interval(values: np.ndarray, level: float = 0.95) -> list[float]:
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(np.asarray(values, dtype=float), [tail, 100 - tail])
    return [float(lo), float(hi)]


# ----------------------------------------------------------------------------------------------
# COCO AP (pycocotools, the evaluator sam3 itself uses)
# ----------------------------------------------------------------------------------------------


def coco_ap(
    gt: Mapping[str, Any],
    detections: Sequence[Mapping[str, Any]],
    iou_type: str = "segm",
    bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """COCO AP, AP50, AP75 and per-class AP of ``detections`` against the COCO dict ``gt``.

    ``detections`` are COCO results: {"image_id", "category_id", "score", "segmentation" (RLE) and/or
    "bbox" [x, y, w, h]}. Values pycocotools reports as -1 (no ground truth to score) become None.
    An empty detection list scores 0 wherever there is ground truth. ``bootstrap`` > 0 adds ``AP_ci95``,
    a percentile bootstrap over images (see :func:`_bootstrap_ap`).
    """
    evaluator = coco_evaluator(gt, detections, iou_type)
    coco_gt = evaluator.cocoGt
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    result: dict[str, Any] = {
        "AP": _none_if_missing(stats[0]),
        "AP50": _none_if_missing(stats[1]),
        "AP75": _none_if_missing(stats[2]),
    }
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
    if bootstrap > 0:
        result["AP_ci95"] = _bootstrap_ap(evaluator, bootstrap, seed)
    return result


def coco_evaluator(gt: Mapping[str, Any], detections: Sequence[Mapping[str, Any]], iou_type: str = "segm"):
    """pycocotools' ``COCOeval`` of ``detections`` against ``gt`` after ``evaluate()`` (per-image matching)."""
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
    return evaluator


def _bootstrap_ap(evaluator, samples: int, seed: int, level: float = 0.95) -> list[float] | None:
    """Percentile interval of AP over image sets resampled with replacement (see :func:`resampled_ap`)."""
    n_images = len(evaluator._paramsEval.imgIds)
    rng = np.random.default_rng(seed)
    values = [resampled_ap(evaluator, rng.integers(0, n_images, size=n_images)) for _ in range(samples)]
    values = [v for v in values if v is not None]
    return percentile_interval(np.array(values), level) if values else None


def resampled_ap(evaluator, picks: Sequence[int]) -> float | None:
    """AP of an evaluated ``COCOeval`` on the images at positions ``picks`` (duplicates count twice).

    The per-image matching (``evaluate``, the slow part) is reused: ``evalImgs`` (laid out category x
    area x image) is rebuilt for the picked images and pycocotools' own ``accumulate`` reruns on a copy.
    AP is summarize()'s first number: mean precision over IoU thresholds, recall points and classes with
    ground truth among the picked images (area all, most detections); None when there is none."""
    base = evaluator._paramsEval
    n_cat = len(base.catIds) if base.useCats else 1
    n_area, n_img = len(base.areaRng), len(base.imgIds)
    params = copy.deepcopy(base)
    params.imgIds = [base.imgIds[i] for i in picks]
    resampled = copy.copy(evaluator)
    resampled._paramsEval = params
    resampled.params = params
    resampled.evalImgs = [
        evaluator.evalImgs[(k * n_area + a) * n_img + i] for k in range(n_cat) for a in range(n_area) for i in picks
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        resampled.accumulate(params)
    precision = resampled.eval["precision"][:, :, :, params.areaRngLbl.index("all"), -1]
    precision = precision[precision > -1]
    return float(precision.mean()) if precision.size else None


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
    empty.dataset = {
        "images": list(coco_gt.dataset["images"]),
        "categories": copy.deepcopy(coco_gt.dataset["categories"]),
        "annotations": [],
    }
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

    Only annotated frames count: a video's ``annotated_frames`` (see factory_sam3.formats.ytvis) drops the
    predictions on every other frame before sam3's evaluator sees them, since it would otherwise count
    them as false positives against the ``null`` of frames nobody annotated.
    """
    import pycocotools.mask as mask_util
    from sam3.eval.ytvis_coco_wrapper import YTVIS
    from sam3.eval.ytvis_eval import YTVISeval

    from factory_sam3.formats.ytvis import ANNOTATED_FRAMES

    gt = copy.deepcopy(dict(gt))
    scored_frames = {
        int(v["id"]): set(int(t) for t in v[ANNOTATED_FRAMES]) for v in gt["videos"] if ANNOTATED_FRAMES in v
    }
    with contextlib.redirect_stdout(io.StringIO()):
        ytvis_gt = YTVIS(ignore_gt_cats=False)
        ytvis_gt.dataset = gt
        ytvis_gt.createIndex()
        results = []
        for track in tracks:
            segs = list(track["segmentations"])
            keep = scored_frames.get(int(track["video_id"]))
            if keep is not None:
                segs = [s if t in keep else None for t, s in enumerate(segs)]
            bboxes = [None if s is None else [float(x) for x in mask_util.toBbox(s)] for s in segs]
            areas = [0 if s is None else int(mask_util.area(s)) for s in segs]
            results.append(
                {
                    "image_id": int(track["video_id"]),
                    "category_id": int(track["category_id"]),
                    "score": float(track["score"]),
                    "segmentations": segs,
                    "bboxes": bboxes,
                    "areas": areas,
                }
            )
        if results:
            ytvis_dt = ytvis_gt.loadRes(results)
        else:
            ytvis_dt = YTVIS(ignore_gt_cats=False)
            ytvis_dt.dataset = {
                "videos": list(ytvis_gt.dataset["images"]),
                "categories": copy.deepcopy(ytvis_gt.dataset["categories"]),
                "annotations": [],
            }
            ytvis_dt.createIndex()
        evaluator = YTVISeval(ytvis_gt, ytvis_dt, iouType="segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return {"mAP": _none_if_missing(stats[0]), "AP50": _none_if_missing(stats[1]), "AP75": _none_if_missing(stats[2])}


# ----------------------------------------------------------------------------------------------


def _as_bool(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
