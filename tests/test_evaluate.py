"""The evaluate runner and stage on a small hand-made test split, with pixel-reading fake models
(tests/helpers_evaluate.py: a toy world where segmenting by colour is a perfect model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from factory_sam3.errors import UserError
from factory_sam3.evaluation import metrics
from factory_sam3.evaluation.runner import (
    EvalSettings,
    copy_prompt_tracker,
    empty_tracker,
    evaluate_images,
    evaluate_videos,
    evaluate_vis,
)
from factory_sam3.evaluation.stage import evaluate_params, run
from helpers_evaluate import H, W, box, colour_segmenter, colour_tracker, no_output, write_coco, write_ytvis
from helpers_params import section_with

REPO = Path(__file__).resolve().parents[1]
# --------------------------------------------------------------------------------------- runner


def test_images_perfect_and_empty_models(tmp_path):
    write_coco(tmp_path / "coco")
    split = tmp_path / "coco" / "test"
    perfect = evaluate_images(
        colour_segmenter, split, EvalSettings(pictures_dir=tmp_path / "pics", label="p", num_overlays=2)
    )
    m = perfect["metrics"]
    assert m["segm_AP"] == pytest.approx(1.0) and m["bbox_AP"] == pytest.approx(1.0)
    assert m["segm_AP_per_class"]["gripper"] == pytest.approx(1.0) and m["segm_AP_per_class"]["defect"] is None
    assert m["images"] == 3 and m["detections"] == 4 and m["images_per_s"] > 0
    assert [Path(p).name for p in perfect["pictures"]] == ["overlay_p_00.png", "overlay_p_01.png"]
    empty = evaluate_images(no_output, split, EvalSettings())
    assert empty["metrics"]["segm_AP"] == 0.0 and empty["pictures"] == []
    # max_images restricts both the predictions and the ground truth scored
    assert evaluate_images(colour_segmenter, split, EvalSettings(max_images=1))["metrics"]["images"] == 1


def test_images_low_scores_dropped_and_detections_capped(tmp_path):
    write_coco(tmp_path / "coco")
    split = tmp_path / "coco" / "test"

    def noisy(image, class_names):
        good = colour_segmenter(image, class_names)
        junk = [{"category": "defect", "score": 0.01, "mask": box(0, 0, 5, 5)} for _ in range(5)]
        return good + junk

    assert evaluate_images(noisy, split, EvalSettings(min_score=0.05))["metrics"]["detections"] == 4
    assert evaluate_images(noisy, split, EvalSettings(max_detections=3))["metrics"]["detections"] == 3 * 3


def test_videos_perfect_tracker_scores_one(tmp_path):
    write_ytvis(tmp_path / "ytvis")
    result = evaluate_videos(
        colour_tracker, tmp_path / "ytvis" / "test", EvalSettings(pictures_dir=tmp_path / "pics", label="p")
    )
    m = result["metrics"]
    assert m["J"] == 1.0 and m["F"] == 1.0 and m["J&F"] == 1.0
    assert m["videos"] == 1 and m["objects"] == 2 and m["frames_per_s"] > 0
    assert Image.open(result["pictures"][0]).n_frames == 6


def test_videos_copy_prompt_matches_independent_score(tmp_path):
    tracks = write_ytvis(tmp_path / "ytvis")
    m = evaluate_videos(copy_prompt_tracker, tmp_path / "ytvis" / "test", EvalSettings())["metrics"]
    # DAVIS: frames after the prompt except the last (5). Object 1: prompted at 0, scored on 1..4; object 2:
    # prompted at 2, scored on 3, and on 4 where it is annotated absent, so the copied mask is a false positive.
    empty = np.zeros((H, W), bool)
    obj1 = [(tracks[1][0], tracks[1][t]) for t in range(1, 5)]
    obj2 = [(tracks[2][2], tracks[2][3]), (tracks[2][2], empty)]
    j1 = np.mean([metrics.region_similarity(p, g) for p, g in obj1])
    j2 = np.mean([metrics.region_similarity(p, g) for p, g in obj2])
    f1 = np.mean([metrics.boundary_f_measure(p, g) for p, g in obj1])
    f2 = np.mean([metrics.boundary_f_measure(p, g) for p, g in obj2])
    assert m["J"] == pytest.approx((j1 + j2) / 2)
    assert m["F"] == pytest.approx((f1 + f2) / 2)
    assert m["J&F"] == pytest.approx(((j1 + j2) / 2 + (f1 + f2) / 2) / 2)
    assert 0 < m["J"] < 1
    assert (m["videos"], m["objects"], m["frames"]) == (1, 2, 6)
    lo, hi = m["J&F_ci95"]
    assert lo == hi == pytest.approx(m["J&F"])  # one video: every resample is the same


def test_videos_keyframe_only_scores_annotated_frames_and_true_negatives(tmp_path):
    tracks = write_ytvis(tmp_path / "ytvis", annotated=[0, 2, 4, 5])
    split = tmp_path / "ytvis" / "test"

    def junk_between_keyframes(frames, prompts):
        """Perfect on the annotated frames, the whole image on the unannotated frames 1 and 3."""
        out = colour_tracker(frames, prompts)
        return {
            o: [np.ones((H, W), bool) if t in (1, 3) and m is not None else m for t, m in enumerate(ms)]
            for o, ms in out.items()
        }

    m = evaluate_videos(junk_between_keyframes, split, EvalSettings())["metrics"]
    # object 1 scored on frames 2 and 4; object 2 (prompted at 2) on frame 4, annotated absent: a true
    # negative; frames 1, 3 (nobody looked) and 5 (the last annotated frame) do not count
    assert (m["J"], m["F"], m["objects"], m["frames"]) == (1.0, 1.0, 2, 3)
    copied = evaluate_videos(copy_prompt_tracker, split, EvalSettings())["metrics"]
    j1 = np.mean([metrics.region_similarity(tracks[1][0], tracks[1][t]) for t in (2, 4)])
    assert copied["J"] == pytest.approx((j1 + 0.0) / 2)  # object 2's copied mask on frame 4 scores 0


def test_annotated_frames_outside_the_video_is_a_clear_error(tmp_path):
    write_ytvis(tmp_path / "ytvis")
    path = tmp_path / "ytvis" / "test" / "annotations.json"
    data = json.loads(path.read_text())
    data["videos"][0]["annotated_frames"] = [0, 9]
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"annotations.json: video 1: 'annotated_frames' lists frames outside 0..5"):
        evaluate_videos(colour_tracker, tmp_path / "ytvis" / "test", EvalSettings())


def test_text_prompted_vis_finds_tracks_and_scores_with_sam3_evaluator(tmp_path):
    write_ytvis(tmp_path / "ytvis")
    split = tmp_path / "ytvis" / "test"
    # keyframes 0, 2, 4: the gripper is found on 0, part_A (appears at 2) on 2; the gripper seen again
    # on 2 and 4 overlaps its track and starts no duplicate (a duplicate would be a false positive)
    every_other = evaluate_vis(colour_segmenter, colour_tracker, split, EvalSettings(vis_keyframe_stride=2))
    assert every_other["metrics"]["vis_tracks"] == 2
    assert every_other["metrics"]["vis_mAP"] == pytest.approx(1.0)
    # only keyframe 0: part_A is never found -> gripper AP 1, part_A AP 0 -> mAP 0.5
    first_only = evaluate_vis(colour_segmenter, colour_tracker, split, EvalSettings(vis_keyframe_stride=8))
    assert first_only["metrics"]["vis_tracks"] == 1
    assert first_only["metrics"]["vis_mAP"] == pytest.approx(0.5)
    nothing = evaluate_vis(no_output, colour_tracker, split, EvalSettings(vis_keyframe_stride=2))
    assert nothing["metrics"]["vis_mAP"] == 0.0 and nothing["metrics"]["vis_tracks"] == 0
    assert (nothing["metrics"]["vis_videos"], nothing["metrics"]["vis_gt_tracks"]) == (1, 2)
    assert nothing["metrics"]["vis_annotated_frames"] == 6


def test_text_prompted_vis_on_a_keyframe_only_video_scores_annotated_frames_only(tmp_path):
    write_ytvis(tmp_path / "ytvis", annotated=[0, 2, 4])
    split = tmp_path / "ytvis" / "test"
    # a perfect detector + tracker also predicts the objects on frames 1, 3 and 5, which nobody annotated
    perfect = evaluate_vis(colour_segmenter, colour_tracker, split, EvalSettings(vis_keyframe_stride=2))
    assert perfect["metrics"]["vis_tracks"] == 2 and perfect["metrics"]["vis_annotated_frames"] == 3
    assert perfect["metrics"]["vis_mAP"] == pytest.approx(1.0)
    # the same file without annotated_frames: those predictions count as false positives (as before)
    path = split / "annotations.json"
    data = json.loads(path.read_text())
    del data["videos"][0]["annotated_frames"]
    path.write_text(json.dumps(data))
    assert (
        evaluate_vis(colour_segmenter, colour_tracker, split, EvalSettings(vis_keyframe_stride=2))["metrics"]["vis_mAP"]
        < 0.5
    )


# --------------------------------------------------------------------------------------- stage


@pytest.mark.integration
def test_stage_writes_metrics_pictures_and_gain(tmp_path):
    write_coco(tmp_path / "coco")
    write_ytvis(tmp_path / "ytvis")
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "train_stage1_loss.csv").write_text("step,loss\n0,2.0\n1,1.5\n2,1.2\n")
    metrics_file = tmp_path / "metrics" / "evaluate.json"
    pictures = tmp_path / "reports" / "evaluate"
    details = tmp_path / "reports" / "evaluate_details.json"
    result = run(
        stage_params(num_overlays=1, vis_keyframe_stride=2),
        coco_root=tmp_path / "coco",
        ytvis_root=tmp_path / "ytvis",
        metrics_file=metrics_file,
        pictures_dir=pictures,
        details_file=details,
        log_mlflow=False,
        loss_csvs={"Stage 1": plots / "train_stage1_loss.csv"},
        model_pairs={
            "baseline": (no_output, copy_prompt_tracker),
            "stage1": (colour_segmenter, empty_tracker),
            "finetuned": lambda: (colour_segmenter, colour_tracker),
        },
    )  # lazily built
    written = json.loads(metrics_file.read_text())
    # stage1 is scored in video only (its image model is the fine-tuned one); gains split by stage
    assert "segm_AP" not in written["stage1"] and written["stage1"]["J&F"] == written["reference"]["empty_J&F"]
    assert written["gain_stage1"]["J&F"] == pytest.approx(
        written["stage1"]["J&F"] - written["baseline"]["J&F"], abs=1e-4
    )
    assert written["gain_stage2"]["J&F"] == pytest.approx(1.0 - written["stage1"]["J&F"], abs=1e-4)
    assert set(written["gain_stage2"]) >= {"J", "F", "J&F", "vis_mAP", "J&F_ci95"}
    # every number with its n, headline numbers with a 95 % interval
    tuned = written["finetuned"]
    assert (tuned["images"], tuned["instances"], tuned["videos"], tuned["objects"], tuned["frames"]) == (3, 4, 1, 2, 6)
    assert tuned["segm_AP_ci95"] == [1.0, 1.0] and tuned["J&F_ci95"] == [1.0, 1.0]
    assert written["reference"]["objects"] == 2 and written["bootstrap"]["samples_videos"] == 1000
    assert written == json.loads(json.dumps(result))
    assert written["baseline"]["segm_AP"] == 0.0 and written["finetuned"]["segm_AP"] == 1.0
    assert written["gain"]["segm_AP"] == 1.0
    assert written["gain"]["J&F"] == pytest.approx(1.0 - written["baseline"]["J&F"], abs=1e-4)
    assert written["finetuned"]["vis_mAP"] == 1.0 and written["baseline"]["vis_mAP"] == 0.0
    assert written["finetuned"]["segm_AP_screw"] == 1.0 and written["finetuned"]["segm_AP_defect"] is None
    assert written["device"].startswith("cpu") and written["profile"] == "tiny"
    # model-free references: the baseline here IS copy-prompt; empty masks score only object 2's absent frames
    assert written["reference"]["copy_prompt_J&F"] == written["baseline"]["J&F"]
    # empty masks score only object 2's absent frame 4 (frames 1-4 of object 1 and 3 of object 2 are 0)
    assert written["reference"]["empty_J"] == pytest.approx((0 + 1 / 2) / 2, abs=1e-4)
    names = sorted(p.name for p in pictures.iterdir())
    assert names == [
        "loss_curves.png",
        "overlay_baseline_00.png",
        "overlay_finetuned_00.png",
        "tracking_baseline.gif",
        "tracking_finetuned.gif",
        "tracking_stage1.gif",
    ]
    assert json.loads(details.read_text())["details"]["finetuned"]["segm_AP_per_class"]["screw"] == 1.0


def stage_params(**evaluate) -> dict:
    """params.yaml's model and evaluate sections for a CPU test run: a fixed VIS threshold (the repository's `auto`
    calibrates on a validation split these tests' data lacks) and ``evaluate`` replaced."""
    return {
        "model": section_with("model", profile="tiny", device="cpu"),
        "evaluate": section_with("evaluate", **{"vis_min_score": 0.5, **evaluate}),
    }


def test_evaluate_params_name_the_bad_key():
    assert evaluate_params(section_with("evaluate"))["num_overlays"] == 3  # params.yaml's value, no second copy
    with pytest.raises(UserError, match="'evaluate.max_images' must be an integer >= 0"):
        evaluate_params(section_with("evaluate", max_images=-1))
    with pytest.raises(UserError, match="'evaluate.min_score' must be a number in"):
        evaluate_params(section_with("evaluate", min_score=2))
    with pytest.raises(UserError, match="'evaluate.vis_keyframe_stride' must be an integer >= 1"):
        evaluate_params(section_with("evaluate", vis_keyframe_stride=0))
    with pytest.raises(UserError, match="'evaluate.vis' must be true or false"):
        evaluate_params(section_with("evaluate", vis="yes"))
    with pytest.raises(UserError, match="unknown key 'evaluate.colour'"):
        evaluate_params(section_with("evaluate", colour=1))
    with pytest.raises(UserError, match="'evaluate.vis_min_score' must be"):
        evaluate_params(section_with("evaluate", vis_min_score="sometimes"))
    partial = section_with("evaluate")
    del partial["bootstrap_seed"]
    with pytest.raises(UserError, match="missing key 'evaluate.bootstrap_seed'"):
        evaluate_params(partial)


def test_cli_help_and_clear_errors(tmp_path):
    python = sys.executable
    env = dict(os.environ, PYTHONPATH=str(REPO))
    help_run = subprocess.run(
        [python, str(REPO / "stages" / "evaluate.py"), "--help"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert help_run.returncode == 0 and "J&F" in help_run.stdout
    for evaluate, error in (
        ({"max_images": -3}, "error: params.yaml: 'evaluate.max_images' must be an integer >= 0"),
        ({"max_imagez": 1}, "error: params.yaml: unknown key 'evaluate.max_imagez'"),
    ):
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(stage_params(**evaluate)))
        bad = subprocess.run(
            [python, str(REPO / "stages" / "evaluate.py"), "--no-mlflow"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        assert bad.returncode == 2 and bad.stderr.startswith(error) and "Traceback" not in bad.stderr, bad.stderr
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(stage_params()))
    missing = subprocess.run(
        [python, str(REPO / "stages" / "evaluate.py"), "--no-mlflow"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert missing.returncode == 2 and "test split not found" in missing.stderr


@pytest.mark.integration
def test_stage_logs_metrics_and_pictures_to_mlflow(tmp_path, monkeypatch):
    import mlflow

    write_coco(tmp_path / "coco")
    write_ytvis(tmp_path / "ytvis")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    run(
        stage_params(num_overlays=1, mlflow=True),
        coco_root=tmp_path / "coco",
        ytvis_root=tmp_path / "ytvis",
        metrics_file=tmp_path / "m.json",
        pictures_dir=tmp_path / "pics",
        details_file=tmp_path / "d.json",
        loss_csvs={},
        model_pairs={"baseline": (no_output, copy_prompt_tracker), "finetuned": (colour_segmenter, colour_tracker)},
    )
    client = mlflow.tracking.MlflowClient(uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert [r.info.run_name for r in runs] == ["evaluate"]
    data = runs[0].data
    assert data.metrics["finetuned.segm_AP"] == 1.0 and data.metrics["baseline.segm_AP"] == 0.0
    assert "finetuned.J_and_F" in data.metrics and "gain.J_and_F" in data.metrics
    logged = {a.path for a in client.list_artifacts(runs[0].info.run_id, "pictures")}
    assert "pictures/tracking_finetuned.gif" in logged and "pictures/overlay_baseline_00.png" in logged
    assert {a.path for a in client.list_artifacts(runs[0].info.run_id)} >= {"m.json", "d.json", "pictures"}
    # tied to the other stages of the same pipeline run (tags from factory_sam3.tracking)
    assert data.tags.get("stage") == "evaluate" and data.tags.get("pipeline_id")
    assert data.params["evaluate.num_overlays"] == "1"


def test_bbox_ap_scores_the_model_box_when_given(tmp_path):
    write_coco(tmp_path / "coco")
    split = tmp_path / "coco" / "test"

    def with_boxes(shift):
        def predict(image, class_names):
            out = colour_segmenter(image, class_names)
            for p in out:
                ys, xs = np.nonzero(p["mask"])
                p["box"] = [xs.min() + shift, ys.min() + shift, xs.max() + 1 + shift, ys.max() + 1 + shift]
            return out

        return predict

    exact = evaluate_images(with_boxes(0), split, EvalSettings())["metrics"]
    assert exact["bbox_AP"] == pytest.approx(1.0)
    far = evaluate_images(with_boxes(30), split, EvalSettings())["metrics"]  # masks right, boxes far off
    assert far["segm_AP"] == pytest.approx(1.0) and far["bbox_AP"] < 0.2


def test_stage_without_training_outputs_fails_fast_and_clearly(tmp_path):
    write_coco(tmp_path / "coco")
    write_ytvis(tmp_path / "ytvis")
    with pytest.raises(UserError, match=r"stage1: not found \(run `dvc repro train_stage1`\)"):
        run(
            stage_params(),
            coco_root=tmp_path / "coco",
            ytvis_root=tmp_path / "ytvis",
            stage1_dir=tmp_path / "models" / "stage1",
            stage2_dir=tmp_path / "models" / "stage2",
            metrics_file=tmp_path / "m.json",
            pictures_dir=tmp_path / "pics",
            details_file=tmp_path / "d.json",
            log_mlflow=False,
        )
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "pics").exists()
