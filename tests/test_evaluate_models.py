"""The real tiny models through the evaluation adapters (baseline: the random init training starts from)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from factory_sam3.device import resolve_device, training_device
from factory_sam3.errors import UserError
from factory_sam3.evaluation import metrics
from factory_sam3.evaluation.models import load_pair, starting_image_model, starting_video_model
from factory_sam3.evaluation.runner import EvalSettings, evaluate_images, evaluate_videos
from helpers_evaluate import H, W, write_coco, write_ytvis
from helpers_params import section_with


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return load_pair("baseline", {"profile": "tiny"}, "cpu", root / "stage1", root / "stage2")


def test_baseline_tiny_image_model_scores_the_test_split(baseline, tmp_path):
    instances = write_coco(tmp_path / "coco")
    predictions = baseline.predict_image(np.zeros((H, W, 3), np.uint8), ["gripper", "screw"])
    assert predictions and {p["category"] for p in predictions} <= {"gripper", "screw"}
    assert all(p["mask"].shape == (H, W) and p["mask"].dtype == bool for p in predictions)
    assert all(0 <= p["score"] <= 1 for p in predictions)
    m = evaluate_images(baseline.predict_image, tmp_path / "coco" / "test", EvalSettings())["metrics"]
    assert m["images"] == 3 and m["instances"] == len(instances) == 4  # every test image and object scored
    assert 0 <= m["segm_AP"] <= 1 and m["detections"] > 0 and m["images_per_s"] > 0


def test_baseline_tiny_tracker_is_scored_on_its_own_masks(baseline, tmp_path):
    """The real tiny tracker through ``evaluate_videos``: its J and F are those of the masks it returns for the
    prompts the evaluator gives it (each object's first visible mask), on the DAVIS-scored frames.

    Whether a tracker *follows* its prompts needs trained weights (the random-init baseline does not):
    tests/test_pretrained.py and tests/test_learning.py check that, and skip until the tiny weights ship."""
    tracks = write_ytvis(tmp_path / "ytvis")
    split = tmp_path / "ytvis" / "test"
    m = evaluate_videos(baseline.track, split, EvalSettings())["metrics"]
    assert m["videos"] == 1 and m["objects"] == 2 and m["frames_per_s"] > 0

    frames = [np.array(Image.open(p).convert("RGB")) for p in sorted((split / "vid").glob("*.png"))]
    predicted = baseline.track(frames, {1: (0, tracks[1][0]), 2: (2, tracks[2][2])})
    assert set(predicted) == {1, 2}
    for masks in predicted.values():
        assert len(masks) == len(frames)
        assert all(m is None or (m.shape == (H, W) and m.dtype == bool) for m in masks)
    # DAVIS frames (as in test_evaluate.test_videos_copy_prompt_matches_independent_score): object 1 on 1..4,
    # object 2 on 3, and on 4 where it is annotated absent (empty ground truth)
    empty = np.zeros((H, W), bool)
    pairs = {
        1: [(predicted[1][t], tracks[1][t]) for t in range(1, 5)],
        2: [(predicted[2][3], tracks[2][3]), (predicted[2][4], empty)],
    }
    j = [np.mean([metrics.region_similarity(empty if p is None else p, g) for p, g in obj]) for obj in pairs.values()]
    f = [np.mean([metrics.boundary_f_measure(empty if p is None else p, g) for p, g in obj]) for obj in pairs.values()]
    assert m["J"] == pytest.approx(np.mean(j)) and m["F"] == pytest.approx(np.mean(f))


def test_finetuned_without_training_outputs_is_a_clear_error(tmp_path):
    for label in ("finetuned", "stage1"):
        with pytest.raises(UserError, match="run `dvc repro train_stage1`"):
            load_pair(label, {"profile": "tiny"}, "cpu", tmp_path / "stage1", tmp_path / "stage2")


def test_stage1_video_model_is_the_stage1_detector_with_the_starting_tracker(tmp_path):
    """``stage1`` = what Stage 2 starts from: Stage 1's detector and trunk, the profile's starting tracker."""
    import torch

    image_model = starting_image_model("tiny", {}, "cpu")
    with torch.no_grad():
        for param in image_model.parameters():
            param.add_(0.5)  # stands in for training: every detector weight differs from the start
    (tmp_path / "stage1").mkdir()
    torch.save({f"detector.{k}": v for k, v in image_model.state_dict().items()}, tmp_path / "stage1" / "model.pt")
    start = starting_video_model("tiny", {}, "cpu", seed=0)
    stage1 = starting_video_model("tiny", {}, "cpu", seed=0, stage1_dir=tmp_path / "stage1")
    trained = image_model.state_dict()
    detector = stage1.detector.state_dict()
    assert all(torch.equal(detector[k], v) for k, v in trained.items())
    assert not all(torch.equal(start.detector.state_dict()[k], v) for k, v in trained.items())
    tracker, start_tracker = stage1.tracker.state_dict(), start.tracker.state_dict()
    assert all(torch.equal(tracker[k], start_tracker[k]) for k in tracker)


def test_one_device_rule_for_every_stage(monkeypatch):
    """training, evaluate and predict share factory_sam3.device: the same answers and errors naming the key."""
    assert resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device(None) == "cpu"
    with pytest.raises(UserError, match="'model.device' is 'cuda' but no CUDA GPU is visible"):
        resolve_device("cuda")
    with pytest.raises(UserError, match="'evaluate.device' is 'cuda:1'"):
        resolve_device("cuda:1", "evaluate.device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(UserError, match="'evaluate.device' must be auto, cpu, cuda or cuda:N"):
        resolve_device("tpu", "evaluate.device")


def test_a_slurm_training_run_means_the_clusters_gpus(monkeypatch):
    """Submitted to SLURM, auto is the GPU nodes' cuda even from a CPU-only login host; cpu stays cpu."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_device("auto", use_cluster=True) == "cuda" and training_device("cuda", use_cluster=True) == "cuda"
    assert training_device("cpu", use_cluster=True) == "cpu"
    assert training_device("auto", use_cluster=False) == "cpu"
    with pytest.raises(UserError, match="'model.device' must be auto, cpu, cuda or cuda:N"):
        training_device("gpu", use_cluster=True)


@pytest.mark.integration
def test_models_scored_in_a_process_pool_equal_the_sequential_run(tmp_path):
    """``evaluate.workers``: the (model, part) pieces scored side by side in worker processes give exactly the
    numbers of scoring them one after another in this process (each piece is deterministic and independent)."""
    from factory_sam3.evaluation.stage import LABELS, evaluate_models, evaluate_params, score_in_pool
    from factory_sam3.models import video as video_models
    from factory_sam3.models.export import export_stage1

    write_coco(tmp_path / "coco")
    write_ytvis(tmp_path / "ytvis")
    image_model = starting_image_model("tiny", {}, "cpu", resolution=112)
    torch.save({"model": image_model.state_dict()}, tmp_path / "trainer.pt")
    stage1, stage2 = tmp_path / "stage1", tmp_path / "stage2"
    export_stage1(
        tmp_path / "trainer.pt",
        stage1,
        {"profile": "tiny", "resolution": 112, "categories": [{"id": 1, "name": "gripper"}]},
    )
    video_models.save_stage2(starting_video_model("tiny", {}, "cpu", resolution=112, stage1_dir=stage1), stage2)
    params = evaluate_params(
        section_with("evaluate", vis_min_score=0.3, bootstrap_samples=50, bootstrap_samples_images=0)
    )
    load_args = {"model_params": {"profile": "tiny"}, "device": "cpu", "stage1_dir": stage1, "stage2_dir": stage2}
    coco, ytvis = tmp_path / "coco" / "test", tmp_path / "ytvis" / "test"

    scored, sources = score_in_pool(LABELS, load_args, params, coco, ytvis, None, workers=2)
    assert set(sources) == set(LABELS) and set(scored["baseline"]) == {"images", "videos", "vis"}
    assert set(scored["stage1"]) == {"videos", "vis"}  # its image model is finetuned's
    pairs = {
        label: (lambda label=label: (lambda p: (p.predict_image, p.track))(load_pair(label, **load_args)))
        for label in LABELS
    }
    with torch.inference_mode():
        sequential = evaluate_models(pairs, params, coco, ytvis, None)
        pooled = evaluate_models(pairs, params, coco, ytvis, None, scored=scored)
    timings = ("images_per_s", "frames_per_s")
    assert {label: {k: v for k, v in m.items() if k not in timings} for label, m in pooled["metrics"].items()} == {
        label: {k: v for k, v in m.items() if k not in timings} for label, m in sequential["metrics"].items()
    }
    assert pooled["details"] == sequential["details"]
    assert pooled["gain"] == sequential["gain"]
    assert sequential["metrics"]["finetuned"]["objects"] > 0
