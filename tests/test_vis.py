"""The detect-then-track loop (factory_sam3.inference.vis) with pixel-reading fakes, its threshold
calibration, and the online tracker against the whole-clip ``track`` on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from factory_sam3.evaluation.runner import EvalSettings, evaluate_vis
from factory_sam3.evaluation.stage import evaluate_params, settings_for
from factory_sam3.inference import vis
from helpers_evaluate import colour_segmenter, colour_tracker, write_ytvis
from helpers_params import section_with

H, W = 40, 60
RED, GREEN = (255, 0, 0), (0, 255, 0)  # test_evaluate's gripper and part_A colours


def frame(*objects) -> np.ndarray:
    image = np.zeros((H, W, 3), np.uint8)
    for colour, (top, left) in objects:
        image[top : top + 8, left : left + 8] = colour
    return image


def run_loop(frames, **settings):
    session = vis.FunctionTrackerSession(colour_tracker)
    results = list(
        vis.segment_video(iter(frames), colour_segmenter, session, ["gripper", "part_A"], vis.VisSettings(**settings))
    )
    return results, results[-1].tracks


def test_an_object_keeps_its_id_while_the_detector_finds_it_again():
    frames = [frame((RED, (5, 2 + 2 * t))) for t in range(9)]
    results, tracks = run_loop(frames, keyframe_stride=2)
    assert list(tracks) == [1] and tracks[1].category == "gripper" and tracks[1].end is None
    assert len(tracks[1].scores) == 5  # matched on keyframes 0, 2, 4, 6, 8
    assert all(set(r.masks) == {1} and r.masks[1].sum() == 64 for r in results)


def test_new_objects_start_tracks_and_lost_ones_end():
    # red all along; green from frame 2 to 5, then gone; green again from frame 10: a new object
    frames = [frame((RED, (5, 5)), *([(GREEN, (25, 30))] if 2 <= t <= 5 or t >= 10 else [])) for t in range(14)]
    results, tracks = run_loop(frames, keyframe_stride=2, max_missed=2)
    assert [(o, t.category, t.start, t.end) for o, t in tracks.items()] == [
        (1, "gripper", 0, None),
        (2, "part_A", 2, 8),
        (3, "part_A", 10, None),
    ]
    assert [sorted(r.masks) for r in results] == [[1]] * 2 + [[1, 2]] * 6 + [[1]] * 2 + [[1, 3]] * 4
    collector = vis.MaskletCollector()
    for r in results:
        collector.add(r)
    masklets = collector.masklets(7, {"gripper": 1, "part_A": 2})
    assert [m["track_id"] for m in masklets] == [1, 2, 3] and all(m["video_id"] == 7 for m in masklets)
    green = masklets[1]["segmentations"]
    assert len(green) == 14 and green[:2] == [None, None] and all(green[2:6]) and not any(green[6:])


def test_low_scores_and_duplicate_detections_start_nothing():
    frames = [frame((RED, (5, 5)))] * 3

    def doubled(image, names):  # every object found twice, by two prompts, the second weaker
        found = colour_segmenter(image, names)
        return found + [dict(d, category="part_A", score=0.6) for d in found]

    session = vis.FunctionTrackerSession(colour_tracker)
    tracks = list(vis.segment_video(frames, doubled, session, ["gripper", "part_A"], vis.VisSettings()))[-1].tracks
    assert [t.category for t in tracks.values()] == ["gripper"]
    assert not run_loop(frames, min_score=0.95)[1]


def test_calibration_picks_the_best_f1_threshold():
    gt = np.zeros((H, W), bool)
    gt[5:13, 5:13] = True
    elsewhere = np.roll(gt, 20, axis=1)

    def detect(image, names):
        return [
            {"category": "gripper", "score": 0.9, "mask": elsewhere},  # confident false positive
            {"category": "gripper", "score": 0.3, "mask": gt},  # the object
            {"category": "gripper", "score": 0.1, "mask": elsewhere},
        ]

    samples = [(frame(), [("gripper", gt)])] * 3
    calibration = vis.calibrate_min_score(detect, samples, ["gripper"])
    assert calibration.min_score == 0.3 and calibration.f1 == pytest.approx(2 / 3) and calibration.recall == 1.0
    wrong_class = vis.calibrate_min_score(detect, [(frame(), [("screw", gt)])], ["gripper"])
    assert wrong_class.min_score is None and "no detection matches" in wrong_class.reason


def test_evaluate_calibrates_on_the_valid_split_or_says_why_not(tmp_path):
    write_ytvis(tmp_path / "ytvis")
    test = tmp_path / "ytvis" / "test"
    settings = EvalSettings(vis_keyframe_stride=2, vis_min_score=None)
    missing = evaluate_vis(colour_segmenter, colour_tracker, test, settings)["metrics"]
    assert missing["vis_mAP"] is None and "no validation split" in missing["vis_note"]
    (tmp_path / "ytvis" / "valid").symlink_to(test)  # the same video serves as validation split
    calibrated = evaluate_vis(colour_segmenter, colour_tracker, test, settings)["metrics"]
    assert calibrated["vis_min_score"] == 0.9 and calibrated["vis_mAP"] == pytest.approx(1.0)
    params = evaluate_params(section_with("evaluate", vis_min_score="auto"))
    assert settings_for(params, "x", None).vis_min_score is None


def test_online_tracker_equals_track_and_keeps_a_bounded_memory():
    import torch

    from factory_sam3.inference.online import OnlineTracker
    from factory_sam3.models import video as video_models

    torch.manual_seed(0)
    model = video_models.build_video_model("tiny", seed=0).eval()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (30, 40, 3), dtype=np.uint8) for _ in range(24)]
    first, second = np.zeros((30, 40), bool), np.zeros((30, 40), bool)
    first[5:15, 5:20], second[15:25, 20:35] = True, True
    expected = video_models.track(model, frames, {1: (0, first), 2: (3, second)})
    session = OnlineTracker(model, len(frames))
    got = {1: [], 2: []}
    for t, image in enumerate(frames):
        masks = session.propagate(image)
        if t == 0:
            masks[1] = session.prompt(1, first)
        if t == 3:
            masks[2] = session.prompt(2, second)
        for obj in got:
            got[obj].append(masks.get(obj, np.zeros((30, 40), bool)))
    for obj in got:
        assert all(np.array_equal(a, b) for a, b in zip(got[obj], expected[obj])), obj
    state = session.objects[1]
    assert len(state.prev) <= session.window + 1 and len(state.cond) == 1
    for _ in range(6):  # re-anchoring adds conditioning frames; old ones beyond the window are dropped
        for _ in range(session.window + 2):
            session.propagate(frames[0])
        session.prompt(1, first)
    assert len(state.cond) <= 1 + model.tracker.max_cond_frames_in_attn


def test_masklets_are_json_and_compressed_rle():
    results, _ = run_loop([frame((RED, (5, 5)))] * 2)
    collector = vis.MaskletCollector()
    for r in results:
        collector.add(r)
    masklet = json.loads(json.dumps(collector.masklets(1, {"gripper": 1, "part_A": 2})))[0]
    assert isinstance(masklet["segmentations"][0]["counts"], str) and masklet["areas"] == [64, 64]
