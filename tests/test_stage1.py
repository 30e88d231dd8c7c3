"""Stage 1 with sam3's own Trainer on the tiny profile (CPU, a few steps on a synthetic COCO fixture)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from factory_sam3.errors import UserError
from helpers_params import section_with
from helpers_stage1 import make_coco

REPO = Path(__file__).resolve().parents[1]
# the repository's train_stage1 section, shortened: one image per step, one thread (tests share the machine)
FAST = {
    "resolution": 112,
    "epochs": 1,
    "val_freq": 1,
    "save_freq": 1,
    "log_freq": 2,
    "min_resize": 96,
    "scheduler_warmup": 2,
    "scheduler_cooldown": 2,
    "batch_size": 1,
    "cpu_threads": 1,
}
MODEL_KEYS = ("profile", "checkpoint", "device")


def write_params(folder: Path, **train) -> Path:
    params = {
        "model": section_with("model", profile="tiny", device="cpu"),
        "mlflow": {"experiment": "stage1-tests"},
        "train_stage1": section_with("train_stage1", **{**FAST, **train}),
    }
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def settings(data_root: Path, **overrides):
    """Stage1Settings from the repository's params.yaml with FAST and ``overrides`` (model or train_stage1 keys)."""
    from factory_sam3.training.stage1.config import settings_with

    values = {**FAST, "device": "cpu", **overrides}
    return settings_with(
        model={k: v for k, v in values.items() if k in MODEL_KEYS},
        train={k: v for k, v in values.items() if k not in MODEL_KEYS},
        data_root=str(data_root),
    )


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> Path:
    return make_coco(tmp_path_factory.mktemp("coco") / "coco", train=6, valid=2, test=2)


@pytest.fixture(scope="module")
def stage(tmp_path_factory, coco):
    """The whole train_stage1 stage, in a scratch working directory, once for the module."""
    work = tmp_path_factory.mktemp("stage1")
    (work / "data").mkdir()
    os.symlink(coco, work / "data" / "coco")
    params = write_params(work)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "stages" / "train_stage1.py"), "--params", str(params)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, proc


@pytest.mark.integration
def test_stage_trains_a_few_steps_and_writes_its_outputs(stage):
    work, proc = stage
    metrics = json.loads((work / "metrics" / "train_stage1.json").read_text())
    assert metrics["profile"] == "tiny" and metrics["steps"] == 6 and metrics["epochs"] == 1
    assert np.isfinite(metrics["loss_first10_mean"]) and np.isfinite(metrics["loss_final"])
    # COCO segm eval ran on the valid split: AP over IoU 0.50:0.95 can never exceed AP at IoU 0.50
    assert isinstance(metrics["val_segm_AP"], float) and isinstance(metrics["val_segm_AP50"], float)
    assert 0.0 <= metrics["val_segm_AP"] <= metrics["val_segm_AP50"] <= 1.0, metrics
    assert 3e6 < metrics["num_params"] < 7e6
    with open(work / "plots" / "train_stage1_loss.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == list(range(6))
    assert {"loss", "loss_mask", "loss_dice", "presence_loss"} <= set(rows[0])
    assert "train_stage1: step 6/6" in proc.stderr  # progress line
    export = work / "models" / "stage1"
    assert {p.name for p in export.iterdir()} == {"model.pt", "config.yaml", "stage1.json"}
    run_dirs = list((work / "runs" / "train_stage1").iterdir())
    assert len(run_dirs) == 1 and (run_dirs[0] / "checkpoints" / "checkpoint.pt").is_file()
    assert (run_dirs[0] / "checkpoints" / "checkpoint_1.pt").is_file()  # save_freq 1


@pytest.mark.integration
def test_stage_logs_steps_val_and_artifacts_to_mlflow(stage):
    import mlflow

    work, _ = stage
    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("stage1-tests")
    (run,) = client.search_runs([exp.experiment_id])
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(6))
    val_ap = client.get_metric_history(run.info.run_id, "val/coco_eval_segm_AP")
    metrics = json.loads((work / "metrics" / "train_stage1.json").read_text())
    assert val_ap and metrics["val_segm_AP"] == pytest.approx(max(val_ap, key=lambda m: m.step).value)
    # params as every stage logs them, `<section>.<key>` of params.yaml (what a sweep filters on), nothing else
    assert run.data.params.get("train_stage1.lr_scale") == "0.1", run.data.params
    assert run.data.params["train_stage1.resolution"] == "112"
    assert run.data.params["model.profile"] == "tiny" and run.data.params["config_hash"]
    assert all(k.split(".")[0] in ("train_stage1", "model", "config_hash") for k in run.data.params), run.data.params
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "train_stage1.json"} <= names


@pytest.mark.integration
def test_export_strict_loads_in_sam3_builder_layout(stage):
    import dataclasses

    from sam3.model_builder import _load_checkpoint

    from factory_sam3.models.tiny import TINY_CONFIG, build_tiny_image_model

    work, _ = stage
    state = torch.load(work / "models" / "stage1" / "model.pt", map_location="cpu", weights_only=True)
    assert state and all(k.startswith("detector.") for k in state)
    model = build_tiny_image_model(dataclasses.replace(TINY_CONFIG, resolution=112), train=False, seed=1)
    result = model.load_state_dict({k[len("detector.") :]: v for k, v in state.items()}, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # sam3's own loader prints the keys it could not match: nothing to print
    out = io.StringIO()
    with redirect_stdout(out):
        _load_checkpoint(model, str(work / "models" / "stage1" / "model.pt"))
    assert "missing" not in out.getvalue()
    assert torch.equal(
        model.transformer.decoder.query_embed.weight, state["detector.transformer.decoder.query_embed.weight"]
    )


@pytest.mark.integration
def test_load_stage1_and_predict(stage):
    from PIL import Image

    from factory_sam3.models import load_stage1, predict_image

    work, _ = stage
    model = load_stage1(work / "models" / "stage1")
    assert not model.training and model.resolution_px == 112
    assert [c["name"] for c in model.categories] == ["gripper", "part_A", "defect", "screw"]
    image = Image.open(next((work / "data" / "coco" / "valid").glob("*.jpg")))
    results = predict_image(model, image, ["gripper", "screw"], score_threshold=0.0, max_detections=3)
    assert len(results) == 6
    category, score, mask, box = results[0]
    assert category in ("gripper", "screw") and 0 <= score <= 1
    assert mask.shape == (image.height, image.width) and mask.dtype == bool and len(box) == 4
    assert [r[1] for r in results] == sorted((r[1] for r in results), reverse=True)


@pytest.mark.integration
def test_resume_after_interrupted_run_ends_at_the_same_epoch(tmp_path, coco, monkeypatch):
    """Kill the run right after epoch 1's checkpoint; the rerun resumes there and stops at epoch 2."""
    from sam3.train.trainer import Trainer

    from factory_sam3.training.stage1 import train as stage1
    from factory_sam3.training.stage1.step_log import read_steps

    class Killed(Exception):
        pass

    original = Trainer.save_checkpoint

    def save_then_die(self, epoch, checkpoint_names=None):
        original(self, epoch, checkpoint_names)
        if epoch == 1:
            raise Killed

    runs = tmp_path / "runs"
    s = settings(coco, epochs=2, val_freq=5)
    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        stage1.train(s, runs_dir=runs)
    monkeypatch.setattr(Trainer, "save_checkpoint", original)
    (run_dir,) = runs.iterdir()
    assert torch.load(run_dir / "checkpoints" / "checkpoint.pt", weights_only=True)["epoch"] == 1

    result = stage1.train(s, runs_dir=runs)
    assert result.run_dir == run_dir and result.epochs == 2 and result.steps == 12
    lines = (run_dir / "steps.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + 12  # epoch 1's 6 steps were not redone
    assert [int(r["step"]) for r in read_steps(run_dir)] == list(range(12))


def test_changed_params_never_resume_a_stale_run(coco, tmp_path):
    from factory_sam3.training.stage1 import train as stage1

    _, a, _ = stage1.prepare(settings(coco), tmp_path)
    _, same, _ = stage1.prepare(settings(coco), tmp_path)
    _, b, _ = stage1.prepare(settings(coco, lr_scale=0.2), tmp_path)
    _, c, _ = stage1.prepare(settings(coco, use_cluster=False, partition="gpu"), tmp_path)
    assert a == same and a != b
    assert a == c  # where it runs is not what it learns


def test_a_changed_tiny_model_never_resumes_a_stale_run(coco, tmp_path, monkeypatch):
    import dataclasses

    from factory_sam3.models import tiny
    from factory_sam3.training.stage1 import train as stage1

    _, before, _ = stage1.prepare(settings(coco), tmp_path)
    monkeypatch.setattr(tiny, "TINY_CONFIG", dataclasses.replace(tiny.TINY_CONFIG, pooled_text_fusion=False))
    _, after, _ = stage1.prepare(settings(coco), tmp_path)
    assert before != after


@pytest.mark.integration
def test_ddp_two_processes_gloo_on_cpu(coco, tmp_path):
    from factory_sam3.training.stage1 import train as stage1

    result = stage1.train(settings(coco, val_freq=5), runs_dir=tmp_path, world_size=2)
    assert result.epochs == 1 and result.steps == 3  # 6 images / 2 processes, batch 1
    assert result.config.trainer.distributed.backend == "gloo"
    assert len(result.step_rows) == 3 and all(np.isfinite(r["loss"]) for r in result.step_rows)


def test_freeze_prefixes(coco):
    from factory_sam3.models import build_image_model

    model = build_image_model("tiny", train=True, resolution=112, freeze=["backbone.language_backbone"])
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("backbone.language_backbone.") for n in frozen)
    with pytest.raises(UserError, match="no parameters under 'backbone.nope'"):
        build_image_model("tiny", resolution=112, freeze=["backbone.nope"])


def test_bad_checkpoint_path_is_a_clear_error(tmp_path, monkeypatch):
    from factory_sam3.models import build_image_model

    with pytest.raises(UserError, match="checkpoint file not found") as err:
        build_image_model("sam3", checkpoint=tmp_path / "missing.pt")
    assert "missing.pt" in err.value.message
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    with pytest.raises(UserError, match="HF_TOKEN is not set"):
        build_image_model("sam3", checkpoint="facebook/sam3")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable PyTorch checkpoint"):
        build_image_model("sam3", checkpoint=garbage)


def test_checkpoint_with_missing_keys_is_refused(tmp_path):
    from factory_sam3.models import build_image_model

    partial = tmp_path / "partial.pt"
    state = build_image_model("tiny", resolution=112).state_dict()
    torch.save({"detector." + k: v for k, v in list(state.items())[:10]}, partial)
    with pytest.raises(UserError, match="weights missing"):
        build_image_model("tiny", resolution=112, checkpoint=partial)


def test_small_data_is_refused_with_what_to_change(tmp_path):
    from factory_sam3.training.stage1 import train as stage1

    root = make_coco(tmp_path / "coco", train=1, valid=1, test=1)
    with pytest.raises(UserError, match="lower train_stage1.batch_size"):
        stage1.prepare(settings(root, batch_size=2), tmp_path / "runs")


def test_resize_sizes_never_empty():
    from factory_sam3.training.stage1.config import resize_sizes

    assert resize_sizes(224, 480) == [224]  # upstream gives [] here
    assert resize_sizes(1008, 480) == list(range(480, 1009, 32))


@pytest.mark.integration
def test_cli_help_and_bad_params(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    script = str(REPO / "stages" / "train_stage1.py")
    assert (
        "train_stage1"
        in subprocess.run(
            [sys.executable, script, "--help"], capture_output=True, text=True, env=env, cwd=tmp_path
        ).stdout
    )
    params = write_params(tmp_path, epochs=0)
    proc = subprocess.run(
        [sys.executable, script, "--params", str(params)], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert proc.returncode == 2 and "'train_stage1.epochs' must be >= 1" in proc.stderr
    params = write_params(tmp_path, batch_sise=2)
    proc = subprocess.run(
        [sys.executable, script, "--params", str(params)], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert proc.returncode == 2 and "unknown key 'train_stage1.batch_sise'" in proc.stderr
    proc = subprocess.run(
        [sys.executable, script, "--params", str(write_params(tmp_path))],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "COCO annotations not found" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.integration
def test_cli_refuses_data_that_failed_validation(tmp_path):
    # run on its own (not through DVC, which stops after a failed validate) it must not train either
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    report = tmp_path / "reports" / "validate.json"
    report.parent.mkdir()
    report.write_text(
        json.dumps(
            {
                "ok": False,
                "errors": ["data/coco/train/_annotations.coco.json: annotation 3: bbox outside the image"],
                "warnings": [],
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, str(REPO / "stages" / "train_stage1.py"), "--params", str(write_params(tmp_path))],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: reports/validate.json: the data failed validation (1 error(s)")
    assert "annotation 3: bbox outside the image" in last
    assert not (tmp_path / "models").exists()
    report.write_text(json.dumps({"ok": True, "errors": [], "warnings": []}))  # passed: on to the next check
    proc = subprocess.run(
        [sys.executable, str(REPO / "stages" / "train_stage1.py"), "--params", str(write_params(tmp_path))],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "COCO annotations not found" in proc.stderr


def test_one_config_for_both_profiles(coco):
    """The sam3 GPU profile and the tiny CPU profile come from the same config (only the group changes)."""
    from omegaconf import OmegaConf

    from factory_sam3.training.stage1.config import compose

    gpu = OmegaConf.to_container(
        compose(settings(coco, profile="sam3", resolution=None, min_resize=480), "cuda", 2, checkpoint="/ckpt/sam3.pt"),
        resolve=True,
    )
    cpu = OmegaConf.to_container(compose(settings(coco, resolution=None), "cpu", 1), resolve=True)
    t = gpu["trainer"]
    assert t["optim"]["amp"] == {"enabled": True, "amp_dtype": "bfloat16"}
    assert t["distributed"]["backend"] == "nccl" and t["accelerator"] == "cuda"
    assert t["model"]["checkpoint"] == "/ckpt/sam3.pt" and t["model"]["activation_checkpointing"] is True
    assert gpu["run"]["resolution"] == 1008 and gpu["run"]["resize_sizes"] == list(range(480, 1009, 32))
    assert cpu["trainer"]["optim"]["amp"]["enabled"] is False and cpu["trainer"]["accelerator"] == "cpu"
    assert cpu["run"]["resolution"] == 224 and cpu["trainer"]["data"]["train"]["pin_memory"] is False
    # the guide's optimisation recipe, x lr_scale 0.1
    lrs = [o["scheduler"]["base_lr"] for o in t["optim"]["options"]["lr"]]
    assert lrs == pytest.approx([8e-5, 2.5e-5, 5e-6])
    assert t["optim"]["gradient_clip"]["max_norm"] == 0.1
    # fused AdamW on CPU (faster tiny steps), torch's default on GPU
    assert cpu["trainer"]["optim"]["optimizer"]["fused"] is True and t["optim"]["optimizer"]["fused"] is False
    assert t["optim"]["param_group_modifiers"][0]["layer_decay_value"] == 0.9
    losses = [f["_target_"].rsplit(".", 1)[1] for f in gpu["scratch"]["loss"]["loss_fns_find"]]
    assert losses == ["Boxes", "IABCEMdetr", "Masks"]
    assert t["skip_saving_ckpts"] is False
    for name in ("trainer", "scratch"):
        assert {k for k in gpu[name]} == {k for k in cpu[name]}


def test_negative_images_are_dropped_only_without_negative_prompts(tmp_path):
    from factory_sam3.training.stage1.data import CocoPrompts
    from helpers_stage1 import make_coco_split

    ann = str(make_coco_split(tmp_path / "train", 8, seed=3, negative_fraction=0.5))
    data = json.loads(Path(ann).read_text())
    with_objects = {a["image_id"] for a in data["annotations"]}
    assert len(with_objects) < len(data["images"])  # the fixture has negatives
    everything = CocoPrompts(ann, include_negatives=True)
    assert len(everything.getDatapointIds()) == len(data["images"])
    queries, _ = everything.loadQueriesAndAnnotationsFromDatapoint(0)
    assert [q["query_text"] for q in queries] == ["gripper", "part_A", "defect", "screw"]
    positives = CocoPrompts(ann, include_negatives=False)
    assert len(positives.getDatapointIds()) == len(with_objects)
    for idx in positives.getDatapointIds():
        queries, annotations = positives.loadQueriesAndAnnotationsFromDatapoint(idx)
        assert queries and all(q["object_ids_output"] for q in queries)


@pytest.mark.integration
def test_submitit_launcher_runs_the_trainer(coco, tmp_path, monkeypatch, capsys):
    """use_cluster goes through submitit; without SLURM here its AutoExecutor runs the job locally."""
    from factory_sam3.training.stage1 import train as stage1

    monkeypatch.setenv("PYTHONPATH", str(REPO))
    result = stage1.train(
        settings(coco, use_cluster=True, partition="gpu", device="cpu", val_freq=5), runs_dir=tmp_path
    )
    assert result.epochs == 1 and result.steps == 6
    assert "submitted local (no SLURM here) job" in capsys.readouterr().err
    assert list((result.run_dir / "submitit_logs").glob("*_log.out"))


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    """A save killed half-way leaves the previous checkpoint intact (upstream deletes it first)."""
    from factory_sam3.training.common import save_checkpoint

    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"epoch": 1}, path)

    def dies_half_way(obj, handle):
        handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"epoch": 1}
