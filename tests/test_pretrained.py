"""The tiny profile's shipped starting weights (models/pretrained/tiny_sam3.pt): they follow their prompts, they
track, they are the file the pretraining pipeline pinned, and a bad file is one clear error."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from factory_sam3.errors import UserError
from factory_sam3.models import pretrained
from factory_sam3.models.video import build_video_model, init_from_checkpoints, starting_checkpoint, track
from factory_sam3.pretrain import generic
from factory_sam3.pretrain.tracker import evaluate_tracking, heldout_clips

SHIPPED = pretrained.TINY_WEIGHTS.is_file()
needs_weights = pytest.mark.skipif(
    not SHIPPED,
    reason="no tiny starting weights ship yet: pretraining has not passed its gate (pretrain/metrics/gate.json)",
)


@pytest.fixture(scope="module")
def video_model():
    model = build_video_model("tiny", seed=None)
    init_from_checkpoints(model, None, starting_checkpoint(model, {}))
    return model.eval()


def _iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _two_lookalikes(speed: float):
    """A clip with two same-colour discs side by side, moving apart at ``speed`` px/frame."""
    rng = np.random.default_rng(7)
    size = 224
    bg = generic.background(rng, size)
    a = generic.Instance(0, 90.0, 112.0, 22.0, 0.0, (220, 40, 40), vx=-speed)
    b = generic.Instance(0, 140.0, 112.0, 22.0, 0.0, (220, 40, 40), vx=speed)
    frames, masks = [], []
    for _ in range(5):
        img, vis = generic.render([a, b], bg, size)
        frames.append(img)
        masks.append(vis)
        for inst in (a, b):
            inst.cx += inst.vx
    return frames, masks


@needs_weights
def test_two_prompts_on_one_frame_give_different_masks(video_model):
    frames, masks = _two_lookalikes(speed=3.0)
    out = track(video_model, frames, {"left": (0, masks[0][0]), "right": (0, masks[0][1])})
    for t in range(1, len(frames)):
        left, right = out["left"][t], out["right"][t]
        assert left.any() and right.any()
        assert _iou(left, right) < 0.3, f"frame {t}: both prompts give the same mask"
        assert _iou(left, masks[t][0]) > _iou(left, masks[t][1])
        assert _iou(right, masks[t][1]) > _iou(right, masks[t][0])


@needs_weights
def test_tracker_follows_moving_objects_better_than_copying_the_prompt(video_model):
    result = evaluate_tracking(video_model, heldout_clips(seed=4242, count=4, num_frames=6, speed=(5.0, 8.0)))
    assert result["cross_object_iou"] < 0.3
    assert result["J"] > result["copy_J"] + 0.1, result


@needs_weights
def test_shipped_file_is_the_one_the_pretraining_pipeline_pinned(repo_root):
    lock = yaml.safe_load((repo_root / "pretrain" / "dvc.lock").read_text())
    outs = {o["path"]: o["md5"] for o in lock["stages"]["gate"]["outs"]}
    shipped = hashlib.md5(pretrained.TINY_WEIGHTS.read_bytes()).hexdigest()
    assert outs["out/tiny_sam3.pt"] == shipped
    info = json.loads(pretrained.TINY_INFO.read_text())
    assert info["md5"] == shipped and info["gate"]["passed"] is True
    assert pretrained.TINY_WEIGHTS.stat().st_size <= 20_000_000


def test_main_pipeline_never_runs_pretraining(repo_root):
    # evaluate's pipeline is every stage `dvc repro` runs: none of pretrain/dvc.yaml's is upstream of it
    out = subprocess.run(
        [sys.executable, "-m", "dvc", "dag", "evaluate", "--md"], cwd=repo_root, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "train_stage1" in out.stdout and "pretrain/dvc.yaml" not in out.stdout


@pytest.mark.parametrize("problem", ["missing", "truncated", "mismatched"])
def test_bad_weights_file_is_one_clear_error(tmp_path, monkeypatch, problem):
    path = tmp_path / "tiny_sam3.pt"
    state = build_video_model("tiny", seed=0).state_dict()
    if problem == "truncated":
        torch.save(state, path)
        path.write_bytes(path.read_bytes()[:100_000])
    elif problem == "mismatched":
        key = next(k for k in state if k.startswith("tracker.") and state[k].ndim == 2)
        state[key] = torch.zeros(3, 3)
        torch.save(state, path)
    monkeypatch.setenv("FACTORY_SAM3_TINY_WEIGHTS", str(path))
    from factory_sam3.models.build import build_image_model

    with pytest.raises(UserError) as err:
        model = build_video_model("tiny", seed=None)
        init_from_checkpoints(model, None, starting_checkpoint(model, {}))
        build_image_model("tiny")
    assert str(path) in err.value.message


def test_without_shipped_weights_the_tiny_profile_says_it_starts_from_random(monkeypatch, capsys):
    monkeypatch.delenv(pretrained.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(pretrained, "TINY_WEIGHTS", pretrained.REPO_ROOT / "no" / "tiny_sam3.pt")
    monkeypatch.setattr(pretrained, "TINY_INFO", pretrained.REPO_ROOT / "no" / "tiny_sam3.json")
    monkeypatch.setattr(pretrained, "_WARNED", [])
    assert pretrained.use_random_init()
    assert "starts from random weights" in capsys.readouterr().err
    model = build_video_model("tiny", seed=None)
    assert starting_checkpoint(model, {}) is None
