"""predict (python -m factory_sam3.predict) and the detect-then-track loop it shares with evaluate.

Models are the tiny profile at seeded random init laid out as the training stages write them
(helpers_predict.make_models); videos are helpers_stage2's moving shapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from factory_sam3.errors import UserError
from factory_sam3.evaluation import metrics
from factory_sam3.evaluation.runner import EvalSettings, evaluate_vis, load_ytvis_split
from factory_sam3.predict import run
from helpers_predict import CATEGORIES, make_models, write_video
from helpers_stage2 import make_ytvis

REPO = Path(__file__).resolve().parents[1]
THRESHOLD = 0.25  # the random-init detector scores ~0.2-0.35: a few tracks per video
STRIDE = 4


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    stage1, stage2 = make_models(root / "models")
    split = make_ytvis(root / "ytvis", "test", videos=2, frames=10, seed=5, formats=False)
    video = root / "cam.mp4"
    frames = write_video(split / "vid00", video)
    return {"root": root, "stage1": stage1, "stage2": stage2, "split": split, "video": video, "frames": frames}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, "-m", "factory_sam3.predict", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _run(world, input_path, out, **kw):
    kw.setdefault("model_spec", str(world["stage2"]))
    return run(
        str(input_path),
        str(out),
        kw.pop("model_spec"),
        kw.pop("classes", None),
        str(kw.pop("score_threshold", THRESHOLD)),
        "cpu",
        keyframe_stride=STRIDE,
        progress=False,
        **kw,
    )


def test_help_names_inputs_models_and_outputs():
    result = subprocess.run(
        [sys.executable, "-m", "factory_sam3.predict", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    for word in ("--classes", "--score-threshold", "--model", "--device", "models/stage1", "ytvis_results.json"):
        assert word in result.stdout


@pytest.mark.integration
def test_predict_json_scores_the_same_as_evaluate_vis(world, tmp_path):
    """One path: evaluate's VIS (Stage 1 detector + Stage 2 tracker, as the finetuned pair) and predict on each
    test video's frame folder give the same masklets, and so the same YTVIS mAP."""
    from factory_sam3.evaluation.models import load_pair

    pair = load_pair("finetuned", {"profile": "tiny"}, "cpu", world["stage1"], world["stage2"], min_score=0.05)
    settings = EvalSettings(vis_keyframe_stride=STRIDE, vis_min_score=THRESHOLD)
    evaluated = evaluate_vis(pair.predict_image, pair.track, world["split"], settings)
    gt, videos = load_ytvis_split(world["split"])
    predicted = []
    for video in videos:
        folder = world["split"] / Path(video["file_names"][0]).parent
        summary = _run(world, folder, tmp_path / folder.name)
        assert summary["kind"] == "video" and summary["frames"] == len(video["file_names"])
        masklets = json.loads((tmp_path / folder.name / "ytvis_results.json").read_text())
        predicted += [dict(m, video_id=video["id"], image_id=video["id"]) for m in masklets]
    assert evaluated["metrics"]["vis_tracks"] > 0
    assert len(predicted) == len(evaluated["masklets"])
    for mine, theirs in zip(predicted, evaluated["masklets"]):
        assert mine["segmentations"] == theirs["segmentations"]
        assert mine["category_id"] == theirs["category_id"]
        assert mine["score"] == pytest.approx(theirs["score"], abs=1e-6)
    assert metrics.ytvis_map(gt, predicted)["mAP"] == pytest.approx(evaluated["metrics"]["vis_mAP"])


def test_video_file_gives_a_readable_overlay_with_every_frame_and_loadable_results(world, tmp_path):
    from sam3.eval.ytvis_coco_wrapper import YTVIS

    out = tmp_path / "cam"
    summary = _run(world, world["video"], out)
    assert summary["frames"] == world["frames"] and summary["frames_per_s"] > 0
    assert sorted(p.name for p in out.iterdir()) == [
        "overlay.mp4",
        "summary.json",
        "ytvis_results.json",
        "ytvis_videos.json",
    ]
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == world["frames"]
    # sam3's YTVIS evaluator loads the results against the video list predict wrote
    ytvis = YTVIS(str(out / "ytvis_videos.json"), ignore_gt_cats=False)
    results = ytvis.loadRes(str(out / "ytvis_results.json"))
    assert len(results.anns) == summary["tracks"] > 0
    first = json.loads((out / "ytvis_results.json").read_text())[0]
    assert len(first["segmentations"]) == world["frames"]
    assert isinstance(next(s for s in first["segmentations"] if s)["counts"], str)  # compressed RLE


def test_png_overlays_and_a_stream_without_objects(world, tmp_path):
    summary = _run(world, world["video"], tmp_path / "png", score_threshold=0.99, overlay_format="png")
    assert summary["tracks"] == 0
    assert len(list((tmp_path / "png" / "overlay").glob("*.png"))) == world["frames"]
    assert json.loads((tmp_path / "png" / "ytvis_results.json").read_text()) == []


def test_folder_of_images_gives_coco_results_pycocotools_loads(world, tmp_path):
    from pycocotools.coco import COCO

    shots = tmp_path / "shots"
    shots.mkdir()
    for i, name in enumerate(["line_a.jpg", "line_b.png"]):
        image = cv2.imread(str(world["split"] / "vid01" / f"{i:05d}.jpg"))
        cv2.imwrite(str(shots / name), image)
    out = tmp_path / "out"
    summary = _run(world, shots, out, model_spec=str(world["stage1"]), classes=["screw", "gripper"])
    assert summary["kind"] == "images" and summary["frames"] == 2
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["line_a.png", "line_b.png"]
    coco = COCO(str(out / "coco_images.json"))
    results = coco.loadRes(str(out / "coco_results.json"))
    assert len(results.anns) == summary["detections"] > 0
    names = {c["id"]: c["name"] for c in CATEGORIES}
    assert {names[a["category_id"]] for a in results.anns.values()} <= {"screw", "gripper"}


def test_truncated_video_is_a_clear_error_and_writes_nothing(world, tmp_path):
    broken = tmp_path / "broken.mp4"
    data = world["video"].read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="broken.mp4: .*(truncated|cannot open|no frame)"):
        _run(world, broken, tmp_path / "out")
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["broken.mp4"]


@pytest.mark.integration
def test_cli_error_is_one_line_and_writes_nothing(world, tmp_path):
    unknown = _cli(
        str(world["video"]),
        "--classes",
        "bolt",
        "--model",
        str(world["stage2"]),
        "-o",
        "out",
        "--device",
        "cpu",
        cwd=tmp_path,
    )
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == [
        f"error: Stage 2 video model ({world['stage2']}): unknown class 'bolt' "
        "(the model knows: gripper, part_A, defect, screw)"
    ]
    assert not (tmp_path / "out").exists()


def test_model_errors(world, tmp_path, monkeypatch):
    with pytest.raises(UserError, match="image model without a tracker: use models/stage2 for videos"):
        _run(world, world["video"], tmp_path / "o1", model_spec=str(world["stage1"]))
    monkeypatch.chdir(tmp_path)  # no models/stage2 here
    with pytest.raises(UserError, match="^models/stage2: model folder not found"):
        _run(world, world["video"], tmp_path / "o2", model_spec="models/stage2")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_bad_inputs_name_the_problem(world, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty: the folder holds no images"):
        _run(world, tmp_path / "empty", tmp_path / "o1")
    with pytest.raises(UserError, match="input not found"):
        _run(world, tmp_path / "nope.mp4", tmp_path / "o2")
    (tmp_path / "not_a_video.mp4").write_text("hello")
    with pytest.raises(UserError, match="not_a_video.mp4: (cannot open|no frame)"):
        _run(world, tmp_path / "not_a_video.mp4", tmp_path / "o3")
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="is a file"):
        _run(world, world["video"], tmp_path / "file" / "out")
    wrong = tmp_path / "wrong_model"
    wrong.mkdir()
    (wrong / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="wrong_model/model.pt: cannot load checkpoint"):
        _run(world, world["video"], tmp_path / "o4", model_spec=str(wrong))
    with pytest.raises(UserError, match="--score-threshold"):
        _run(world, world["video"], tmp_path / "o5", score_threshold="high")
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 6))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="mine: exists and is not a predict output"):
        _run(world, world["video"], tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
