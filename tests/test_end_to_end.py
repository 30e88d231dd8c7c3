"""The README's main job, end to end: `dvc repro` of the tiny default in a fresh copy of the repo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

STAGES = ["fetch", "extract_frames", "to_coco", "to_ytvis", "validate", "train_stage1", "train_stage2", "evaluate"]
DATA_STAGES = STAGES[:4]


def _copy_working_tree(src: Path, dst: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=src, check=True, capture_output=True,
    ).stdout.decode().split("\0")
    for rel in filter(None, listed):
        source = src / rel
        if source.is_file():
            target = dst / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def _env(repo: Path) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("DVC_ROOT", None)
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def _run(cmd: list[str], repo: Path, timeout: int = 1500) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=repo, env=_env(repo), capture_output=True, text=True, timeout=timeout)


def _out_hashes(lock: dict, stage: str) -> dict:
    return {out["path"]: out["md5"] for out in lock["stages"][stage].get("outs", [])}


@pytest.mark.slow
def test_dvc_repro_on_the_embedded_default(tmp_path, repo_root):
    repo = tmp_path / "clone"
    _copy_working_tree(repo_root, repo)
    git = ["git", "-c", "user.email=test@example.com", "-c", "user.name=test"]
    subprocess.run(git + ["init", "-q"], cwd=repo, check=True)
    subprocess.run(git + ["add", "-A"], cwd=repo, check=True)
    subprocess.run(git + ["commit", "-qm", "snapshot"], cwd=repo, check=True)

    dag = _run(["dvc", "dag", "--md"], repo)
    assert dag.returncode == 0, dag.stderr
    for stage in STAGES:
        assert stage in dag.stdout

    first = _run(["dvc", "repro"], repo)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]

    second = _run(["dvc", "repro"], repo)
    assert second.returncode == 0, second.stderr
    assert "Running stage" not in second.stdout, "a second dvc repro must run nothing"

    for name in ("train_stage1", "train_stage2", "evaluate"):
        assert (repo / "metrics" / f"{name}.json").exists(), name
    evaluation = json.loads((repo / "metrics" / "evaluate.json").read_text())
    assert {"baseline", "finetuned"} <= set(evaluation)

    # The committed dvc.lock pins the data: a fresh run of the data stages reproduces it byte for byte.
    committed = repo_root / "dvc.lock"
    if committed.exists():
        fresh = yaml.safe_load((repo / "dvc.lock").read_text())
        pinned = yaml.safe_load(committed.read_text())
        for stage in DATA_STAGES:
            assert _out_hashes(fresh, stage) == _out_hashes(pinned, stage), stage
