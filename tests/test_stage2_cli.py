"""stages/train_stage2.py as DVC runs it: params.yaml, outputs, MLflow; bad input; 2-process DDP (gloo, CPU)."""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from helpers_stage2 import make_ytvis

pytestmark = pytest.mark.integration  # trains Stage 2 through its stage script (DDP included)

FAST = {
    "steps": 2,
    "grad_accum": 1,
    "frames_per_clip": 3,
    "max_objects": 2,
    "save_freq": 1,
    "eval_frames": 4,
    "log_freq": 1,
}


def _workspace(tmp_path: Path, repo_root: Path, **overrides) -> Path:
    from factory_sam3.models.tiny import build_tiny_image_model

    make_ytvis(tmp_path / "data" / "ytvis", "train", videos=2, frames=6, seed=0)
    make_ytvis(tmp_path / "data" / "ytvis", "valid", videos=1, frames=5, seed=1)
    stage1 = tmp_path / "models" / "stage1"
    stage1.mkdir(parents=True)
    model = build_tiny_image_model(train=False, seed=3)
    torch.save({"detector." + k: v for k, v in model.state_dict().items()}, stage1 / "model.pt")
    (stage1 / "stage1.json").write_text(json.dumps({"profile": "tiny", "resolution": 224}))
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["model"]["device"] = "cpu"
    params["train_stage2"].update(FAST, **overrides)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / ".dvc").mkdir()  # the MLflow store lives at the DVC root
    return tmp_path


def _run(cwd: Path, repo_root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, str(repo_root / "stages" / "train_stage2.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_help(repo_root):
    proc = subprocess.run(
        [sys.executable, str(repo_root / "stages" / "train_stage2.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "train_stage2" in proc.stdout


def test_stage_writes_outputs_and_logs_to_mlflow(tmp_path, repo_root):
    work = _workspace(tmp_path, repo_root)
    proc = _run(work, repo_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((work / "metrics" / "train_stage2.json").read_text())
    assert metrics["steps"] == 2 and metrics["heldout"]["frames"] > 0
    rows = list(csv.DictReader((work / "plots" / "train_stage2_loss.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert {"loss", "focal", "dice", "iou", "object"} <= set(rows[0])
    assert (work / "models" / "stage2" / "model.pt").is_file()
    assert list((work / "runs" / "train_stage2").glob("*/last.pt"))
    db = sqlite3.connect(work / "mlflow.db")
    names = {r[0] for r in db.execute("select distinct key from metrics")}
    steps = {r[0] for r in db.execute("select step from metrics where key = 'loss'")}
    params = {r[0] for r in db.execute("select key from params")}
    assert {"loss", "focal", "dice", "iou", "object", "heldout_iou", "heldout_copy_iou"} <= names
    assert steps == {1, 2} and "train_stage2.lr_scale" in params


def test_bad_params_are_one_clear_line(tmp_path, repo_root):
    work = _workspace(tmp_path, repo_root, stride_min=4, stride_max=2)
    proc = _run(work, repo_root)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: params.yaml: 'train_stage2.stride_min'")
    assert "Traceback" not in proc.stderr
    assert not (work / "models" / "stage2").exists()


def test_missing_stage1_is_a_clear_error(tmp_path, repo_root):
    work = _workspace(tmp_path, repo_root)
    for f in (work / "models" / "stage1").iterdir():
        f.unlink()
    proc = _run(work, repo_root)
    assert proc.returncode == 2 and "models/stage1" in proc.stderr and "Traceback" not in proc.stderr


def test_data_that_failed_validation_is_refused(tmp_path, repo_root):
    work = _workspace(tmp_path, repo_root)
    (work / "reports").mkdir()
    (work / "reports" / "validate.json").write_text(
        json.dumps({"ok": False, "errors": ["data/ytvis/train/annotations.json: video 1: 5 file_names but length 6"]})
    )
    proc = _run(work, repo_root)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "reports/validate.json: the data failed validation" in proc.stderr and "video 1" in proc.stderr
    assert not (work / "models" / "stage2").exists()


def test_ddp_two_processes_on_cpu(tmp_path, repo_root):
    work = _workspace(tmp_path, repo_root, num_gpus=2)
    proc = _run(work, repo_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((work / "metrics" / "train_stage2.json").read_text())
    assert metrics["clips"] == 2 * 2 * 1
    state = torch.load(work / "models" / "stage2" / "model.pt", weights_only=True)
    assert {k.split(".")[0] for k in state} == {"detector", "tracker"}
