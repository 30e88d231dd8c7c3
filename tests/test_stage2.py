"""Stage 2 (tracker fine-tuning): model, training forward, checkpointing, resume, export. Tiny profile, CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from factory_sam3.errors import UserError
from factory_sam3.models import video as video_models
from factory_sam3.models import video_memory as vm
from factory_sam3.training.stage2 import data as s2data
from factory_sam3.training.stage2.config import Stage2Settings
from factory_sam3.training.stage2.model import ClipForward, ForwardOptions
from factory_sam3.training.stage2.train import apply_freeze, run, set_train_modes
from helpers_params import section_with
from helpers_stage2 import make_ytvis

TRAINED_BY_DEFAULT = ("tracker.", "detector.backbone.vision_backbone.sam2_convs.")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ytvis")
    make_ytvis(root, "train", videos=2, frames=8, seed=0)
    make_ytvis(root, "valid", videos=1, frames=6, seed=1)
    return root


@pytest.fixture(scope="module")
def stage1(tmp_path_factory) -> Path:
    """A Stage 1 export as train_stage1 writes it (detector.* keys of the tiny image model + stage1.json)."""
    from factory_sam3.models.tiny import build_tiny_image_model

    out = tmp_path_factory.mktemp("stage1")
    model = build_tiny_image_model(train=False, seed=3)
    torch.save({"detector." + k: v for k, v in model.state_dict().items()}, out / "model.pt")
    (out / "stage1.json").write_text(json.dumps({"profile": "tiny", "resolution": 224}))
    return out


def _model(stage1=None):
    model = video_models.build_video_model("tiny", seed=0)
    if stage1 is not None:
        video_models.init_from_checkpoints(model, stage1)
    apply_freeze(model, ["detector"], ["tracker", "detector.backbone.vision_backbone.sam2_convs"])
    set_train_modes(model)
    return model


def _batch(dataset, seed=0, frames=4):
    videos = s2data.load_ytvis(dataset / "train")
    sampler = s2data.ClipSampler(videos, frames_per_clip=frames, max_objects=2)
    rng = np.random.default_rng(seed)
    return s2data.collate_clip(sampler.sample(rng), 224, s2data.ClipAugment(), rng)


def test_loader_reads_every_segmentation_encoding_and_null_frames(dataset):
    videos = s2data.load_ytvis(dataset / "train")
    video = videos[0]
    encodings = {
        type(s["counts"]).__name__ if isinstance(s, dict) else "polygon"
        for t in video.tracks
        for s in t.segmentations
        if s is not None
    }
    assert encodings == {"str", "list", "polygon"}
    assert any(s is None for s in video.tracks[1].segmentations)  # the occluded object
    for i, track in enumerate(video.tracks):
        for f, seg in enumerate(track.segmentations):
            mask = video.mask(i, f)
            assert mask.shape == (video.height, video.width)
            assert mask.any() == (seg is not None)


def test_sparse_keyframes_only_annotated_frames_are_sampled(tmp_path):
    make_ytvis(tmp_path, "train", videos=1, frames=12, keyframe_every=3, formats=False)
    videos = s2data.load_ytvis(tmp_path / "train")
    assert videos[0].annotated == [0, 3, 6, 9]
    sampler = s2data.ClipSampler(videos, frames_per_clip=3, stride_min=1, stride_max=1)
    for seed in range(10):
        clip = sampler.sample(np.random.default_rng(seed))
        assert set(clip.frames) <= {0, 3, 6, 9}
        batch = s2data.collate_clip(clip, 224)
        assert bool(batch.supervised.all())


def _strides(clip) -> set[int]:
    timeline = clip.video.annotated
    positions = [timeline.index(f) for f in clip.frames]
    return {abs(b - a) for a, b in zip(positions, positions[1:])}


def test_sampler_takes_consecutive_annotated_frames_unless_the_stride_augmentation_fires(tmp_path):
    make_ytvis(tmp_path, "train", videos=2, frames=30, keyframe_every=2, formats=False, occlude=False)
    videos = s2data.load_ytvis(tmp_path / "train")
    consecutive = s2data.ClipSampler(videos, frames_per_clip=4, stride_min=2, stride_max=5, stride_prob=0.0)
    always = s2data.ClipSampler(videos, frames_per_clip=4, stride_min=3, stride_max=3, stride_prob=1.0)
    sometimes = s2data.ClipSampler(videos, frames_per_clip=4, stride_min=2, stride_max=5, stride_prob=0.2)
    rng = np.random.default_rng(0)
    assert all(_strides(consecutive.sample(rng)) == {1} for _ in range(50))
    assert all(_strides(always.sample(rng)) == {3} for _ in range(50))
    strided = sum(_strides(sometimes.sample(rng)) != {1} for _ in range(400))
    assert 40 <= strided <= 120, strided  # ~0.2 x 400


def test_exit_clips_show_one_of_their_objects_leaving(tmp_path):
    """``exit_prob``: that share of clips starts where a tracked object is gone from a later frame of the clip (the
    helper's object 1 is hidden on frames 10-11 of 30); the rest are sampled as before, where few clips show it."""
    make_ytvis(tmp_path, "train", videos=2, frames=30, objects=4, formats=False)
    videos = s2data.load_ytvis(tmp_path / "train")

    def shows_an_exit(clip) -> bool:
        return any(o not in clip.video.visible(f) for f in clip.frames[1:] for o in clip.objects)

    exits = s2data.ClipSampler(videos, frames_per_clip=4, max_objects=2, stride_prob=0.0, exit_prob=1.0)
    plain = s2data.ClipSampler(videos, frames_per_clip=4, max_objects=2, stride_prob=0.0, exit_prob=0.0)
    half = s2data.ClipSampler(videos, frames_per_clip=4, max_objects=2, stride_prob=0.0, exit_prob=0.5)
    rng = np.random.default_rng(0)
    clips = [exits.sample(rng) for _ in range(100)]
    assert all(shows_an_exit(c) and 1 in c.objects and len(c.objects) == 2 for c in clips)
    assert all(_strides(c) == {1} for c in clips)  # still consecutive annotated frames
    plain_share = sum(shows_an_exit(plain.sample(rng)) for _ in range(400)) / 400
    half_share = sum(shows_an_exit(half.sample(rng)) for _ in range(400)) / 400
    assert plain_share < 0.15, plain_share
    assert half_share == pytest.approx(0.5 + 0.5 * plain_share, abs=0.08), (half_share, plain_share)


def test_bad_annotations_name_the_file_and_record(tmp_path):
    split = make_ytvis(tmp_path, "train", videos=1, frames=4, formats=False)
    data = json.loads((split / "annotations.json").read_text())
    data["annotations"][0]["segmentations"] = data["annotations"][0]["segmentations"][:2]
    (split / "annotations.json").write_text(json.dumps(data))
    with pytest.raises(UserError) as err:
        s2data.load_ytvis(split)
    assert "annotations.json" in err.value.message and "annotations[0]" in err.value.message


def test_augmentation_is_identical_across_frames(dataset):
    videos = s2data.load_ytvis(dataset / "train")
    video = videos[0]
    clip = s2data.Clip(video, [0, 0, 0], [0])  # the same frame three times: any per-frame difference is a bug
    batch = s2data.collate_clip(
        clip, 224, s2data.ClipAugment(min_crop=0.6, jitter=0.4, hflip_prob=1.0), np.random.default_rng(1)
    )
    assert torch.equal(batch.images[0], batch.images[1]) and torch.equal(batch.images[0], batch.images[2])
    assert torch.equal(batch.masks[0], batch.masks[2])
    assert batch.track_ids == [video.tracks[0].track_id] and batch.frame_indices == [0, 0, 0]


def test_gradients_reach_memory_attention_encoder_and_decoder(dataset, stage1):
    model = _model(stage1)
    forward = ClipForward(model, ForwardOptions(prompt_probs={"mask": 1.0}))
    out = forward(_batch(dataset), np.random.default_rng(0))
    out["loss"].backward()
    for part in (
        "tracker.transformer.encoder.layers.0.cross_attn_image",
        "tracker.maskmem_backbone",
        "tracker.sam_mask_decoder",
        "tracker.obj_ptr_proj",
        "detector.backbone.vision_backbone.sam2_convs",
    ):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(part)]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), part
    trunk = "detector.backbone.vision_backbone.trunk"
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith(trunk))
    assert torch.isfinite(out["loss"]) and all(torch.isfinite(out[k]) for k in ("focal", "dice", "iou", "object"))


def test_frozen_parts_stay_bit_identical_and_tracker_changes(dataset, stage1):
    model = _model(stage1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.1)
    forward = ClipForward(model, ForwardOptions(prompt_probs={"box": 1.0}, correction_clicks=1))
    forward(_batch(dataset, seed=2), np.random.default_rng(2))["loss"].backward()
    optimizer.step()
    after = model.state_dict()
    for key, value in before.items():
        if key.startswith(TRAINED_BY_DEFAULT):
            continue
        assert torch.equal(value, after[key]), key
    changed = [k for k in before if k.startswith("tracker.") and not torch.equal(before[k], after[k])]
    assert any("transformer.encoder" in k for k in changed) and any("maskmem_backbone" in k for k in changed)


def test_per_layer_checkpointing_gives_identical_gradients(dataset, stage1):
    batch = _batch(dataset, seed=4)
    grads = []
    for checkpointed in (False, True):
        model = _model(stage1)
        options = ForwardOptions(prompt_probs={"mask": 1.0}, checkpoint_memory_attention=checkpointed)
        forward = ClipForward(model, options)
        torch.manual_seed(7)  # same dropout masks in both runs
        forward(batch, np.random.default_rng(0))["loss"].backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert any("transformer.encoder" in n for n in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-7, msg=name)


def test_checkpointing_really_recomputes(dataset, stage1, monkeypatch):
    """The per-layer path recomputes each memory-attention layer in backward (it is not a no-op flag)."""
    model = _model(stage1)
    calls = []
    original = vm._memory_layer

    def counting(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(vm, "_memory_layer", counting)
    forward = ClipForward(model, ForwardOptions(prompt_probs={"mask": 1.0}, checkpoint_memory_attention=True))
    out = forward(_batch(dataset, frames=3), np.random.default_rng(0))
    forward_calls = len(calls)
    out["loss"].backward()
    layers = len(model.tracker.transformer.encoder.layers)
    assert forward_calls == 2 * layers  # two tracked frames
    assert len(calls) == 2 * forward_calls


def test_object_absent_in_some_frames_trains(dataset, stage1):
    videos = s2data.load_ytvis(dataset / "train")
    video = videos[0]
    absent = [f for f in video.annotated if video.tracks[1].segmentations[f] is None]
    present = [f for f in video.annotated if video.tracks[1].segmentations[f] is not None]
    assert absent, "fixture: object 1 must leave the frame"
    clip = s2data.Clip(video, [present[0], absent[0], absent[-1] if len(absent) > 1 else present[-1]], [0, 1])
    batch = s2data.collate_clip(clip, 224)
    assert not bool(batch.present[1, 1])
    model = _model(stage1)
    out = ClipForward(model, ForwardOptions(prompt_probs={"points": 1.0}))(batch, np.random.default_rng(0))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["object"] > 0


def test_track_api_returns_one_mask_per_frame(stage1):
    model = _model(stage1).eval()
    frames = [np.full((40, 56, 3), 30 * i, dtype=np.uint8) for i in range(4)]
    first = np.zeros((40, 56), dtype=bool)
    first[10:20, 10:30] = True
    result = video_models.track(model, frames, {7: (1, first), 9: (0, first)})
    assert set(result) == {7, 9}
    assert len(result[7]) == 4 and result[7][0].shape == (40, 56) and result[7][0].dtype == bool
    assert not result[7][0].any()  # before its prompt frame
    assert np.array_equal(result[7][1], first)  # the prompt frame returns the prompt


def _settings(**kw):
    """The repository's train_stage2 section, shortened (one CPU thread: tests share the machine)."""
    base = {
        "steps": 4,
        "grad_accum": 1,
        "frames_per_clip": 3,
        "max_objects": 2,
        "save_freq": 2,
        "eval_frames": 4,
        "log_freq": 2,
        "cpu_threads": 1,
    }
    return Stage2Settings.from_params(section_with("train_stage2", **{**base, **kw}))


def _run(tmp_path, dataset, stage1, settings, out="stage2"):
    return run(
        settings,
        {"profile": "tiny", "device": "cpu"},
        data_dir=dataset,
        stage1_dir=stage1,
        out_dir=tmp_path / out,
        runs_dir=tmp_path / "runs",
        metrics_file=tmp_path / f"{out}.json",
        plot_file=tmp_path / f"{out}.csv",
    )


@pytest.mark.integration
def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path, dataset, stage1, monkeypatch):
    from factory_sam3.training.stage2 import train as train_module

    full = _run(tmp_path / "a", dataset, stage1, _settings())
    # kill the second run right after its step-2 checkpoint, then rerun: it resumes and ends identically
    original = train_module.save_checkpoint

    def killing_save(*args, **kwargs):
        original(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_checkpoint", killing_save)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "b", dataset, stage1, _settings())
    assert not (tmp_path / "b" / "stage2").exists()
    monkeypatch.setattr(train_module, "save_checkpoint", original)
    resumed = _run(tmp_path / "b", dataset, stage1, _settings())
    assert resumed["resumed_from_step"] == 2 and full["resumed_from_step"] == 0
    a = torch.load(tmp_path / "a" / "stage2" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "stage2" / "model.pt", weights_only=True)
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)
    rows = (tmp_path / "b" / "stage2.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss,focal,dice,iou,object") and len(rows) == 5
    # a changed config does not resume the stale run
    changed = _run(tmp_path / "b", dataset, stage1, _settings(seed=1))
    assert changed["resumed_from_step"] == 0
    # an unreadable checkpoint is a clear error naming it, never a silent restart from step 0
    checkpoint = max((tmp_path / "b" / "runs").glob("*/last.pt"), key=lambda p: p.stat().st_mtime)  # seed 1's
    checkpoint.write_bytes(b"truncated")
    with pytest.raises(UserError, match="unreadable training checkpoint") as err:
        _run(tmp_path / "b", dataset, stage1, _settings(seed=1))
    assert str(checkpoint) in str(err.value)


def test_export_strict_loads_and_tracks(tmp_path, dataset, stage1):
    metrics = _run(tmp_path, dataset, stage1, _settings(steps=2, save_freq=5))
    state = torch.load(tmp_path / "stage2" / "model.pt", weights_only=True)
    assert {k.split(".")[0] for k in state} == {"detector", "tracker"}
    loaded = video_models.load_stage2(tmp_path / "stage2")
    assert not loaded.training
    fresh = video_models.build_video_model("tiny", seed=None)
    result = fresh.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    stage1_state = torch.load(stage1 / "model.pt", weights_only=True)
    for key, value in stage1_state.items():  # detector and trunk come from Stage 1 unchanged
        assert torch.equal(state[key], value), key
    assert metrics["heldout"]["frames"] > 0
    assert set(metrics["final"]) == {"loss", "focal", "dice", "iou", "object"}


@pytest.mark.integration
def test_submitit_launcher_trains_the_same_model(tmp_path, dataset, stage1, monkeypatch, capsys):
    """use_cluster goes through submitit, one task per GPU; without SLURM here its AutoExecutor runs the job
    locally, and the job learns exactly what the direct run learns."""
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    direct = _run(tmp_path / "direct", dataset, stage1, _settings(steps=2, save_freq=5))
    cluster = _run(tmp_path / "slurm", dataset, stage1, _settings(steps=2, save_freq=5, use_cluster=True))
    assert "submitted local (no SLURM here) job" in capsys.readouterr().err
    assert list((tmp_path / "slurm" / "runs" / "submitit_logs").glob("*_log.out"))
    assert cluster["clips"] == direct["clips"] == 2  # 2 steps x 1 clip x 1 process
    a = torch.load(tmp_path / "direct" / "stage2" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "slurm" / "stage2" / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    keys = [{p.parent.name for p in (tmp_path / run / "runs").glob("*/last.pt")} for run in ("direct", "slurm")]
    assert keys[0] == keys[1] and len(keys[0]) == 1  # where it runs is not what it learns: one run key
    # a job that fails (here: no training videos) is one error with the job's own message and its logs
    empty = tmp_path / "empty_ytvis"
    (empty / "train").mkdir(parents=True)
    with pytest.raises(UserError, match=r"SLURM job \S+ failed: .*no training videos.*its logs: "):
        _run(tmp_path / "failing", empty, stage1, _settings(steps=2, use_cluster=True))


def test_tracker_state_dict_matches_upstream_tracker_keys():
    """Our tracker adds no parameter: its keys are those of sam3's tracker classes built the upstream way."""
    from sam3.model.sam3_tracker_base import Sam3TrackerBase

    tracker = video_models.build_tiny_tracker(64, 224)
    assert isinstance(tracker, Sam3TrackerBase)
    upstream_names = {n for n, _ in Sam3TrackerBase.named_parameters(tracker)}
    assert set(tracker.state_dict()) >= upstream_names
    assert not any("Predictor" in type(m).__name__ for m in tracker.modules())


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError, match="'train_stage2.num_cond_frames' must be smaller than frames_per_clip"):
        Stage2Settings.from_params(section_with("train_stage2", frames_per_clip=2, num_cond_frames=2))
    with pytest.raises(UserError, match="unknown key 'train_stage2.epochz'"):
        Stage2Settings.from_params(section_with("train_stage2", epochz=3))
    with pytest.raises(UserError, match="'train_stage2.stride_prob' must be a number in"):
        Stage2Settings.from_params(section_with("train_stage2", stride_prob=1.5))
    with pytest.raises(UserError, match="'train_stage2.steps' must be an integer, got '10'"):
        Stage2Settings.from_params(section_with("train_stage2", steps="10"))
    missing = section_with("train_stage2")
    del missing["exit_prob"]
    with pytest.raises(UserError, match="missing key 'train_stage2.exit_prob'"):
        Stage2Settings.from_params(missing)
    model = video_models.build_video_model("tiny", seed=0)
    with pytest.raises(UserError, match="no parameters under"):
        apply_freeze(model, ["detector.nope"], [])


def test_cross_object_iou_tells_prompt_following_from_prompt_independent_masks():
    from factory_sam3.training.stage2.train import cross_object_iou

    a = np.zeros((8, 8), bool)
    a[:4, :4] = True
    b = np.zeros((8, 8), bool)
    b[4:, 4:] = True
    half = np.zeros((8, 8), bool)
    half[:4, :2] = True  # half of a
    empty = np.zeros((8, 8), bool)
    # the same mask for every object (ignores the prompt): 1; disjoint masks: 0; a known overlap: its IoU
    assert cross_object_iou({0: [a, a], 1: [a, a]}, [0, 1]) == 1.0
    assert cross_object_iou({0: [a], 1: [b]}, [0]) == 0.0
    assert cross_object_iou({0: [a], 1: [half]}, [0]) == pytest.approx(0.5)
    # frames where both are empty do not count; three objects -> three pairs
    assert cross_object_iou({0: [empty, a], 1: [empty, a]}, [0, 1]) == 1.0
    assert cross_object_iou({0: [a], 1: [a], 2: [b]}, [0]) == pytest.approx(1 / 3)
    assert np.isnan(cross_object_iou({0: [empty], 1: [empty]}, [0]))
