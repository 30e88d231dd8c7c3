"""Metric code on hand-made cases, and against independent computations written differently."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pycocotools.mask as mask_util
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy import ndimage

from factory_sam3.evaluation.metrics import (
    aggregate_objects,
    bootstrap_gain_ci,
    bootstrap_video_ci,
    boundary_f_measure,
    coco_ap,
    coco_evaluator,
    davis_scored_frames,
    region_similarity,
    resampled_ap,
    score_object,
    ytvis_map,
)


def box_mask(shape, top, left, bottom, right):
    mask = np.zeros(shape, dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


# ---------------------------------------------------------------- independent reference versions


def reference_iou(pred, gt):
    """IoU through pycocotools' RLE arithmetic (a different implementation from ours)."""
    if not pred.any() and not gt.any():
        return 1.0
    rles = [mask_util.encode(np.asfortranarray(m.astype(np.uint8))) for m in (pred, gt)]
    return float(mask_util.iou([rles[0]], [rles[1]], [0])[0, 0])


def reference_boundary(mask):
    """DAVIS boundary written out pixel by pixel: compare with the right, lower and lower-right
    neighbour; on the last column only the lower one, on the last row only the right one."""
    h, w = mask.shape
    out = np.zeros_like(mask, dtype=bool)
    for y in range(h):
        for x in range(w):
            neighbours = []
            if x + 1 < w and y + 1 < h:
                neighbours = [mask[y, x + 1], mask[y + 1, x], mask[y + 1, x + 1]]
            elif y + 1 < h:
                neighbours = [mask[y + 1, x]]
            elif x + 1 < w:
                neighbours = [mask[y, x + 1]]
            out[y, x] = any(n != mask[y, x] for n in neighbours)
    return out


def reference_f(pred, gt, fraction=0.008):
    """Boundary F with matching by Euclidean distance transform instead of dilation."""
    radius = math.ceil(fraction * math.hypot(*pred.shape))
    pb, gb = reference_boundary(pred), reference_boundary(gt)
    if not pb.any() and not gb.any():
        return 1.0
    if not pb.any() or not gb.any():
        return 0.0
    dist_to_gt = ndimage.distance_transform_edt(~gb)
    dist_to_pred = ndimage.distance_transform_edt(~pb)
    precision = np.mean(dist_to_gt[pb] <= radius)
    recall = np.mean(dist_to_pred[gb] <= radius)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def random_blob(rng, shape):
    """A few overlapping ellipses: irregular boundaries for the agreement tests."""
    mask = np.zeros(shape, dtype=bool)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        ry, rx = rng.uniform(3, shape[0] / 3), rng.uniform(3, shape[1] / 3)
        mask |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return mask


# ---------------------------------------------------------------- J


def test_j_perfect_empty_and_known_overlap():
    shape = (40, 40)
    square = box_mask(shape, 5, 5, 15, 15)
    assert region_similarity(square, square) == 1.0
    assert region_similarity(np.zeros(shape), np.zeros(shape)) == 1.0  # DAVIS: both empty
    assert region_similarity(np.zeros(shape), square) == 0.0
    assert region_similarity(square, np.zeros(shape)) == 0.0
    shifted = box_mask(shape, 5, 10, 15, 20)  # overlap 10x5 = 50, union 150
    assert region_similarity(shifted, square) == pytest.approx(1 / 3)


def test_j_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        region_similarity(np.zeros((4, 4)), np.zeros((4, 5)))


# ---------------------------------------------------------------- F


def test_f_perfect_empty_and_known_values():
    shape = (100, 100)  # diagonal 141.4 -> tolerance ceil(1.13) = 2 px
    square = box_mask(shape, 10, 10, 30, 30)
    assert boundary_f_measure(square, square) == 1.0
    assert boundary_f_measure(np.zeros(shape), np.zeros(shape)) == 1.0
    assert boundary_f_measure(np.zeros(shape), square) == 0.0
    assert boundary_f_measure(square, np.zeros(shape)) == 0.0
    # A 1-pixel shift is within tolerance: F stays 1 while J drops.
    shifted = box_mask(shape, 11, 11, 31, 31)
    assert boundary_f_measure(shifted, square) == 1.0
    assert region_similarity(shifted, square) < 0.95
    # Far apart: no boundary pixel matches.
    far = box_mask(shape, 60, 60, 80, 80)
    assert boundary_f_measure(far, square) == 0.0
    # Predicting one of two equal ground-truth squares: precision 1, recall 1/2 -> F = 2/3.
    both = square | far
    assert boundary_f_measure(square, both) == pytest.approx(2 / 3)


def test_j_and_f_agree_with_independent_computation():
    rng = np.random.default_rng(7)
    for shape in [(48, 64), (90, 70), (120, 160)]:
        for _ in range(4):
            gt = random_blob(rng, shape)
            # a perturbed prediction: the same blob moved by a few pixels and partly eroded
            pred = np.roll(gt, shift=(int(rng.integers(-4, 5)), int(rng.integers(-4, 5))), axis=(0, 1))
            if rng.random() < 0.5:
                pred = ndimage.binary_erosion(pred, iterations=2)
            assert region_similarity(pred, gt) == pytest.approx(reference_iou(pred, gt), abs=1e-12)
            assert boundary_f_measure(pred, gt) == pytest.approx(reference_f(pred, gt), abs=1e-12)


def test_object_touching_the_image_edge_has_no_boundary_on_the_edge():
    shape = (50, 50)
    corner = box_mask(shape, 30, 30, 50, 50)  # touches the bottom and right edges
    assert boundary_f_measure(corner, corner) == 1.0
    np.testing.assert_array_equal(
        __import__("factory_sam3.evaluation.metrics", fromlist=["boundary_map"]).boundary_map(corner),
        reference_boundary(corner),
    )


# ---------------------------------------------------------------- aggregation


def test_score_object_and_aggregation_pools_all_objects_of_the_split():
    shape = (40, 40)
    square = box_mask(shape, 5, 5, 15, 15)
    shifted = box_mask(shape, 5, 10, 15, 20)
    perfect = score_object([square, square], [square, square])
    assert perfect == {
        "J": 1.0,
        "F": 1.0,
        "J&F": 1.0,
        "frames": 2,
        "present_frames": 2,
        "present_J_sum": 2.0,
        "absent_frames": 0,
        "absent_empty": 0,
    }
    half = score_object([square, np.zeros(shape)], [square, square])
    assert half["J"] == 0.5 and half["F"] == 0.5
    third = score_object([shifted], [square])
    assert third["J"] == pytest.approx(1 / 3)

    summary = aggregate_objects({"v1": [perfect, half], "v2": [third], "v3": []})
    # DAVIS 2017: the mean over the three objects, not of the per-video means ((0.75 + 1/3) / 2)
    expected_j = (1.0 + 0.5 + 1 / 3) / 3
    assert summary["J"] == pytest.approx(expected_j)
    assert summary["J"] != pytest.approx((0.75 + 1 / 3) / 2)
    expected_f = (1.0 + 0.5 + third["F"]) / 3
    assert summary["F"] == pytest.approx(expected_f)
    assert summary["J&F"] == pytest.approx((expected_j + expected_f) / 2)
    assert summary["videos"] == 2 and summary["objects"] == 3 and summary["frames"] == 5
    assert aggregate_objects({}) == {}
    with pytest.raises(ValueError):
        score_object([], [])


def test_davis_scores_annotated_frames_after_the_prompt_but_not_the_last():
    # dense video of 6 frames, object prompted on frame 0: DAVIS scores masks[1:-1] = frames 1..4
    assert davis_scored_frames(0, range(6)) == [1, 2, 3, 4]
    # an object first given on frame 2: frames 3 and 4 (5 is the sequence's last)
    assert davis_scored_frames(2, range(6)) == [3, 4]
    # keyframes only (0, 4, 8, 12): the frames between are not annotated, 12 is the last annotated one
    assert davis_scored_frames(0, [8, 0, 12, 4]) == [4, 8]
    assert davis_scored_frames(4, [0, 4, 8]) == []  # nothing left between the prompt and the last frame
    assert davis_scored_frames(0, []) == []


def test_true_negative_frames_score_one_and_false_positives_zero():
    shape = (30, 30)
    empty = np.zeros(shape, bool)
    blob = box_mask(shape, 5, 5, 15, 15)
    # object absent on an annotated frame: nothing predicted is right (J = F = 1), a mask there is wrong (0)
    assert score_object([empty], [empty])["J&F"] == 1.0
    assert score_object([blob], [empty])["J&F"] == 0.0
    # one visible frame tracked perfectly, then absent with a leftover mask: (1 + 0) / 2
    assert score_object([blob, blob], [blob, empty])["J"] == 0.5


def test_j_split_into_frames_with_and_without_the_object():
    """``J_present`` (J where the object is there) and ``empty_when_absent`` (share of frames without the object
    where nothing is predicted), frames pooled over objects: hand-computed."""
    shape = (30, 30)
    empty = np.zeros(shape, bool)
    blob = box_mask(shape, 5, 5, 15, 15)  # 100 px
    half = box_mask(shape, 5, 5, 15, 10)  # 50 px inside blob: IoU 0.5
    # object 1: present, present (IoU 1 and 0.5), absent with a leftover mask; object 2: absent twice, one right
    one = score_object([blob, half, blob], [blob, blob, empty])
    two = score_object([empty, blob], [empty, empty])
    assert (one["present_frames"], one["absent_frames"], one["absent_empty"]) == (2, 1, 0)
    assert (two["present_frames"], two["absent_frames"], two["absent_empty"]) == (0, 2, 1)
    summary = aggregate_objects({"v": [one, two]})
    assert summary["J_present"] == pytest.approx((1.0 + 0.5) / 2)
    assert summary["empty_when_absent"] == pytest.approx(1 / 3)
    assert summary["J"] == pytest.approx(((1.0 + 0.5 + 0.0) / 3 + (1.0 + 0.0) / 2) / 2)  # DAVIS J unchanged
    assert (summary["present_frames"], summary["absent_frames"]) == (2, 3)
    only_present = aggregate_objects({"v": [score_object([blob], [blob])]})
    assert only_present["empty_when_absent"] is None and only_present["J_present"] == 1.0


def test_bootstrap_over_videos_hand_computed():
    one = {"J": 1.0, "F": 1.0, "J&F": 1.0, "frames": 1}
    zero = {"J": 0.0, "F": 0.0, "J&F": 0.0, "frames": 1}
    # a single video: every resample is that video
    assert bootstrap_video_ci({"a": [one, zero]}, samples=50) == {
        "J_ci95": [0.5, 0.5],
        "F_ci95": [0.5, 0.5],
        "J&F_ci95": [0.5, 0.5],
    }
    # two videos scoring 1 and 0: a resample pools {1, 1}, {1, 0} or {0, 0} -> 1, 0.5, 0 with chances
    # 1/4, 1/2, 1/4, so the 2.5 % and 97.5 % percentiles of 1000 resamples are 0 and 1
    ci = bootstrap_video_ci({"a": [one], "b": [zero]}, samples=1000, seed=3)
    assert ci["J&F_ci95"] == [0.0, 1.0]
    assert bootstrap_video_ci({"a": [one], "b": [zero]}, samples=1000, seed=3) == ci  # seeded
    # videos, not objects, are resampled: a video of three objects scoring 1 moves the pooled mean to 3/4
    pooled = bootstrap_video_ci({"a": [one, one, one], "b": [zero]}, samples=2000, seed=0)["J_ci95"]
    assert pooled == [0.0, 1.0]
    assert bootstrap_video_ci({}, samples=10) == {} and bootstrap_video_ci({"a": [one]}, samples=0) == {}


def test_paired_gain_interval_is_that_of_the_difference():
    def obj(j):
        return {"J": j, "F": j, "J&F": j, "frames": 1}

    before = {"a": [obj(0.1)], "b": [obj(0.5)], "c": [obj(0.9), obj(0.3)]}
    after = {v: [obj(o["J"] + 0.1) for o in objects] for v, objects in before.items()}
    assert bootstrap_gain_ci(before, after, samples=500)["J&F_ci95"] == [pytest.approx(0.1), pytest.approx(0.1)]
    separate = bootstrap_video_ci(before, samples=500)["J&F_ci95"]
    assert separate[1] - separate[0] > 0.2  # each model alone varies with the videos drawn
    assert bootstrap_gain_ci(before, {"a": after["a"]}) == {}  # not the same videos: no paired interval


# ---------------------------------------------------------------- COCO AP


def rle(mask):
    encoded = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    encoded["counts"] = encoded["counts"].decode("ascii")
    return encoded


def make_coco(instances, shape=(60, 80), num_images=3):
    """instances: list of (image_id, category_id, mask)."""
    categories = [{"id": 1, "name": "gripper"}, {"id": 2, "name": "part_A"}, {"id": 3, "name": "defect"}]
    images = [
        {"id": i, "file_name": f"{i}.jpg", "height": shape[0], "width": shape[1]} for i in range(1, num_images + 1)
    ]
    annotations = []
    for ann_id, (image_id, cat, mask) in enumerate(instances, start=1):
        seg = rle(mask)
        annotations.append(
            {
                "id": ann_id,
                "image_id": image_id,
                "category_id": cat,
                "segmentation": seg,
                "area": float(mask.sum()),
                "bbox": [float(x) for x in mask_util.toBbox(seg)],
                "iscrowd": 0,
            }
        )
    return {"images": images, "categories": categories, "annotations": annotations}


def detection(image_id, cat, mask, score):
    seg = rle(mask)
    return {
        "image_id": image_id,
        "category_id": cat,
        "score": score,
        "segmentation": seg,
        "bbox": [float(x) for x in mask_util.toBbox(seg)],
    }


def test_coco_ap_perfect_empty_and_known_value():
    shape = (60, 80)
    gt_instances = [
        (1, 1, box_mask(shape, 5, 5, 25, 30)),
        (1, 2, box_mask(shape, 30, 40, 50, 70)),
        (2, 1, box_mask(shape, 10, 10, 40, 40)),
    ]
    gt = make_coco(gt_instances, shape)  # image 3 is a negative; category 3 never appears
    perfect = [detection(i, c, m, 0.9) for i, c, m in gt_instances]
    for iou_type in ("segm", "bbox"):
        result = coco_ap(gt, perfect, iou_type)
        assert result["AP"] == pytest.approx(1.0) and result["AP50"] == pytest.approx(1.0)
        assert result["AP75"] == pytest.approx(1.0)
        assert result["per_class"] == {"gripper": pytest.approx(1.0), "part_A": pytest.approx(1.0), "defect": None}
        empty = coco_ap(gt, [], iou_type)
        assert empty["AP"] == 0.0 and empty["AP50"] == 0.0
        assert empty["per_class"]["gripper"] == 0.0

    # One ground truth, one prediction at IoU 70/120 = 0.583: true positive at IoU thresholds
    # 0.50 and 0.55 only -> AP = 2/10, AP50 = 1, AP75 = 0.
    square = box_mask((40, 40), 0, 0, 10, 10)
    offset = box_mask((40, 40), 0, 3, 10, 12)
    assert reference_iou(offset, square) == pytest.approx(70 / 120)
    gt_one = make_coco([(1, 1, square)], (40, 40), num_images=1)
    known = coco_ap(gt_one, [detection(1, 1, offset, 0.8)], "segm")
    assert known["AP"] == pytest.approx(0.2) and known["AP50"] == pytest.approx(1.0)
    assert known["AP75"] == pytest.approx(0.0)


def test_resampled_ap_equals_pycocotools_on_the_duplicated_images():
    shape = (60, 80)
    gt_instances = [
        (1, 1, box_mask(shape, 5, 5, 25, 30)),
        (2, 1, box_mask(shape, 10, 10, 40, 40)),
        (3, 2, box_mask(shape, 30, 40, 50, 70)),
    ]
    dets = [
        detection(1, 1, box_mask(shape, 5, 5, 25, 30), 0.9),  # hit
        detection(2, 1, box_mask(shape, 30, 40, 50, 70), 0.95),  # miss, scored higher
        detection(3, 2, box_mask(shape, 31, 41, 50, 70), 0.7),
    ]  # hit
    gt = make_coco(gt_instances, shape, num_images=3)
    evaluator = coco_evaluator(gt, dets, "segm")
    picks = [0, 0, 2]  # image 1 twice, image 3 once, image 2 left out
    # the same sample written out as a dataset: images 1, 1' (a copy under id 11) and 3
    copies = {1: [1, 11], 2: [], 3: [3]}
    dup_instances = [(new, c, m) for i, c, m in gt_instances for new in copies[i]]
    dup_gt = make_coco(dup_instances, shape, num_images=3)
    dup_gt["images"] = [{"id": i, "file_name": f"{i}.jpg", "height": shape[0], "width": shape[1]} for i in (1, 11, 3)]
    dup_dets = [dict(d, image_id=new) for d in dets for new in copies[d["image_id"]]]
    expected = run_pycocotools(dup_gt, dup_dets, "segm")[0]
    assert resampled_ap(evaluator, picks) == pytest.approx(expected, abs=1e-12)
    assert resampled_ap(evaluator, [0, 1, 2]) == pytest.approx(coco_ap(gt, dets)["AP"], abs=1e-12)


def test_coco_ap_bootstrap_interval():
    shape = (60, 80)
    gt_instances = [(i, 1, box_mask(shape, 5, 5 + i, 25, 30 + i)) for i in range(1, 5)]
    gt = make_coco(gt_instances, shape, num_images=4)
    perfect = [detection(i, c, m, 0.9) for i, c, m in gt_instances]
    assert coco_ap(gt, perfect, bootstrap=20)["AP_ci95"] == [pytest.approx(1.0), pytest.approx(1.0)]
    half = perfect[:2]  # images 3 and 4 missed
    result = coco_ap(gt, half, bootstrap=200, seed=1)
    lo, hi = result["AP_ci95"]
    assert lo < result["AP"] < hi and lo < 0.2 and hi > 0.8
    assert coco_ap(gt, half, bootstrap=200, seed=1)["AP_ci95"] == [lo, hi]
    assert "AP_ci95" not in coco_ap(gt, half)


def run_pycocotools(gt, dets, iou_type, cat_ids=None):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([dict(d) for d in dets])
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_coco_ap_agrees_with_pycocotools_called_directly():
    rng = np.random.default_rng(3)
    shape = (60, 80)
    gt_instances, dets = [], []
    for image_id in range(1, 6):
        for _ in range(rng.integers(1, 4)):
            cat = int(rng.integers(1, 4))
            mask = random_blob(rng, shape)
            gt_instances.append((image_id, cat, mask))
            # noisy detection of it, sometimes with the wrong class, plus some false positives
            noisy = np.roll(mask, shift=(int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), axis=(0, 1))
            dets.append(
                detection(
                    image_id, cat if rng.random() < 0.8 else int(rng.integers(1, 4)), noisy, float(rng.uniform(0.3, 1))
                )
            )
        dets.append(detection(image_id, int(rng.integers(1, 4)), random_blob(rng, shape), float(rng.uniform(0, 0.6))))
    gt = make_coco(gt_instances, shape, num_images=5)
    for iou_type in ("segm", "bbox"):
        ours = coco_ap(gt, dets, iou_type)
        theirs = run_pycocotools(make_coco(gt_instances, shape, num_images=5), dets, iou_type)
        assert 0 < ours["AP"] < 1
        assert ours["AP"] == pytest.approx(theirs[0], abs=1e-12)
        assert ours["AP50"] == pytest.approx(theirs[1], abs=1e-12)
        assert ours["AP75"] == pytest.approx(theirs[2], abs=1e-12)
        # per-class AP: pycocotools restricted to one category at a time
        for cat_id, name in [(1, "gripper"), (2, "part_A"), (3, "defect")]:
            single = run_pycocotools(make_coco(gt_instances, shape, num_images=5), dets, iou_type, [cat_id])
            expected = None if single[0] < 0 else single[0]
            assert ours["per_class"][name] == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------- YTVIS mAP (sam3's evaluator)


def make_ytvis(shape=(40, 50), length=4):
    frames_a = [box_mask(shape, 5, 5 + 2 * t, 20, 20 + 2 * t) for t in range(length)]
    frames_b = [None, box_mask(shape, 25, 25, 35, 45), box_mask(shape, 26, 25, 36, 45), None]
    gt = {
        "videos": [
            {
                "id": 1,
                "file_names": [f"v/{t:05d}.jpg" for t in range(length)],
                "length": length,
                "height": shape[0],
                "width": shape[1],
            }
        ],
        "categories": [{"id": 1, "name": "gripper"}, {"id": 4, "name": "screw"}],
        "annotations": [],
    }
    for ann_id, (cat, frames) in enumerate([(1, frames_a), (4, frames_b)], start=1):
        segs = [None if m is None else rle(m) for m in frames]
        gt["annotations"].append(
            {
                "id": ann_id,
                "video_id": 1,
                "category_id": cat,
                "iscrowd": 0,
                "segmentations": segs,
                "bboxes": [None if s is None else list(mask_util.toBbox(s)) for s in segs],
                "areas": [None if m is None else int(m.sum()) for m in frames],
            }
        )
    return gt, {1: frames_a, 4: frames_b}


def test_ytvis_map_through_sam3_evaluator():
    gt, frames = make_ytvis()
    perfect = [
        {
            "video_id": 1,
            "category_id": cat,
            "score": 0.9,
            "segmentations": [None if m is None else rle(m) for m in masks],
        }
        for cat, masks in frames.items()
    ]
    assert ytvis_map(gt, perfect)["mAP"] == pytest.approx(1.0)
    assert ytvis_map(gt, [])["mAP"] == 0.0
    wrong_class = [dict(t, category_id=1 if t["category_id"] == 4 else 4) for t in perfect]
    assert ytvis_map(gt, wrong_class)["mAP"] == 0.0


def test_ytvis_map_ignores_predictions_on_frames_nobody_annotated():
    shape, length = (40, 50), 8
    masks = [box_mask(shape, 5, 5 + 2 * t, 20, 20 + 2 * t) for t in range(length)]
    keyframes = [0, 4]  # keyframe-only video: frames 1-3 and 5-7 were never annotated
    absent = box_mask(shape, 25, 25, 35, 45)
    gt = {
        "videos": [
            {
                "id": 1,
                "file_names": [f"v/{t:05d}.jpg" for t in range(length)],
                "length": length,
                "height": shape[0],
                "width": shape[1],
                "annotated_frames": keyframes + [6],
            }
        ],
        "categories": [{"id": 1, "name": "gripper"}],
        "annotations": [
            {
                "id": 1,
                "video_id": 1,
                "category_id": 1,
                "iscrowd": 0,
                "segmentations": [rle(m) if t in keyframes else None for t, m in enumerate(masks)],
                "bboxes": [None] * length,
                "areas": [int(masks[0].sum()) if t in keyframes else None for t in range(length)],
            }
        ],
    }
    # a perfect detector + tracker: the object's mask on every frame it is in view (it left before frame 6,
    # annotated as absent there), annotated or not
    perfect = [
        {
            "video_id": 1,
            "category_id": 1,
            "score": 0.9,
            "segmentations": [rle(m) if t < 6 else None for t, m in enumerate(masks)],
        }
    ]
    assert ytvis_map(gt, perfect)["mAP"] == pytest.approx(1.0)
    # frame 6 is annotated and empty: a mask there is a false positive, counted as before
    on_absent = [
        dict(
            perfect[0],
            segmentations=[rle(m) if t < 6 else rle(absent) if t == 6 else None for t, m in enumerate(masks)],
        )
    ]
    # masklet IoU over frames 0, 4, 6: 2 areas of overlap / (2 areas + the false positive)
    area, extra = int(masks[0].sum()), int(absent.sum())
    iou = 2 * area / (2 * area + extra)
    expected = float(np.mean([1.0 if iou >= t else 0.0 for t in np.linspace(0.5, 0.95, 10)]))
    assert ytvis_map(gt, on_absent)["mAP"] == pytest.approx(expected)
    # the same file without "annotated_frames" (as before): the unannotated frames count against the
    # prediction (IoU 2/6) -> mAP 0
    old = dict(gt, videos=[{k: v for k, v in gt["videos"][0].items() if k != "annotated_frames"}])
    assert ytvis_map(old, perfect)["mAP"] == 0.0
