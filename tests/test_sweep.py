"""Queued sweeps: `dvc exp run --queue -S ...` + `dvc queue start`, results in `dvc exp show` and MLflow.

Queued experiments run in .dvc/tmp/exps/tmpXXXX, which DVC deletes afterwards; the runs must land in
the repository's own store (DVC_ROOT), one per experiment, tagged with the experiment's name.

* test_queued_sweep_mechanics: a one-stage throwaway project (seconds per experiment).
* test_queued_sweep_real_pipeline (slow): the real pipeline copied to a temp folder, sweeping
  train_stage1.lr_scale on the tiny default with short training.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers_s3 import VENV_BIN, make_tiny_project, project_env, run

pytestmark = pytest.mark.integration  # dvc exp run --queue + dvc queue workers

PY = sys.executable
DVC = str(VENV_BIN / "dvc")
REPO_ROOT = Path(__file__).resolve().parents[1]


def run_queue(project: Path, env: dict, timeout_s: float) -> None:
    """`dvc queue start` and wait (bounded) until nothing is queued or running."""
    # the worker outlives `dvc queue start` and inherits its stdout: no pipe, or we would wait for it
    with open(project.parent / "queue-start.log", "w") as log:
        subprocess.run(
            [DVC, "queue", "start", "-j", "1"],
            cwd=project,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=True,
        )
    deadline = time.monotonic() + timeout_s
    status = ""
    while time.monotonic() < deadline:
        status = run([DVC, "queue", "status"], project, env, check=False).stdout
        if not any(word in status for word in ("Queued", "Running")):
            break
        time.sleep(2)
    else:
        run([DVC, "queue", "stop", "--kill"], project, env, check=False)
        pytest.fail(f"queue did not finish in {timeout_s} s:\n{status}")
    assert "Failed" not in status, (
        status + run([DVC, "queue", "logs", status.split()[-1]], project, env, check=False).stdout[-3000:]
    )
    run([DVC, "queue", "stop"], project, env, check=False)


def experiments_from_show(project: Path, env: dict, params_file: str = "params.yaml") -> dict[str, dict]:
    """{exp name: {"params": {...}, "metrics": {file: {...}}}} from `dvc exp show --json`."""
    shown = json.loads(run([DVC, "exp", "show", "--json"], project, env).stdout)
    found: dict[str, dict] = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs") or []:
                data = rev.get("data") or {}
                params = ((data.get("params") or {}).get(params_file) or {}).get("data") or {}
                metrics = {f: (m or {}).get("data") for f, m in (data.get("metrics") or {}).items()}
                found[rev.get("name") or exp.get("name")] = {"params": params, "metrics": metrics}
    return found


def mlflow_runs(root: Path, stage: str) -> list:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    assert (root / "mlflow.db").is_file(), "no MLflow store in the repository"
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("factory-sam3")
    return client.search_runs([exp.experiment_id], filter_string=f"tags.stage = '{stage}'")


def assert_logged_in_repo(root: Path, runs: list) -> None:
    for logged in runs:
        artifact_dir = Path(logged.info.artifact_uri.removeprefix("file://"))
        assert artifact_dir.is_relative_to(root / "mlartifacts"), logged.info.artifact_uri
        assert ".dvc/tmp/exps" not in logged.info.artifact_uri
        assert artifact_dir.is_dir(), f"artifacts of {logged.info.run_id} missing"
    assert not list((root / ".dvc" / "tmp").rglob("mlflow.db")), "a store was created in a temp copy"


def test_queued_sweep_mechanics(tmp_path):
    env = project_env()
    project = make_tiny_project(tmp_path / "proj", env, steps=3)
    run([PY, "-m", "factory_sam3.tracking", "init"], project, env)  # store exists before workers start
    run([DVC, "exp", "run", "--queue", "-S", "train.lr_scale=0.2,0.5"], project, env)
    run_queue(project, env, timeout_s=300)

    exps = experiments_from_show(project, env)
    assert len(exps) == 2, exps
    by_lr = {float(e["params"]["train"]["lr_scale"]): name for name, e in exps.items()}
    assert set(by_lr) == {0.2, 0.5}
    for lr, name in by_lr.items():
        metrics = exps[name]["metrics"]["metrics/train.json"]
        assert metrics["loss"] == pytest.approx((1 - lr) ** 3)

    runs = mlflow_runs(project, "train")
    assert len(runs) == 2
    for logged in runs:
        name = logged.data.tags["dvc_exp_name"]
        assert name in exps, f"MLflow run tagged {name!r}, not an experiment of `dvc exp show`"
        assert float(logged.data.params["train.lr_scale"]) == float(exps[name]["params"]["train"]["lr_scale"])
        assert logged.data.tags["dvc_queued"] == "true"
        assert logged.data.metrics["loss"] == pytest.approx(exps[name]["metrics"]["metrics/train.json"]["loss"])
    assert_logged_in_repo(project, runs)

    # Same params again: DVC restores from its run cache, runs no code and logs nothing new; the
    # earlier MLflow run is found by the params_hash tag.
    out = run([DVC, "exp", "run", "-S", "train.lr_scale=0.2"], project, env)
    assert "is cached - skipping run" in out.stdout + out.stderr
    assert len(mlflow_runs(project, "train")) == 2
    found = run([PY, "-m", "factory_sam3.tracking", "find", "train"], project, env).stdout
    earlier = [r for r in runs if float(r.data.params["train.lr_scale"]) == 0.2][0]
    assert earlier.info.run_id in found


def _real_stage1_ready() -> bool:
    return (REPO_ROOT / "stages" / "train_stage1.py").is_file() and (REPO_ROOT / ".dvc").is_dir()


@pytest.mark.slow
@pytest.mark.skipif(not _real_stage1_ready(), reason="stages/train_stage1.py not in the repo yet")
def test_queued_sweep_real_pipeline(tmp_path):
    """2-point queued sweep over train_stage1.lr_scale on the tiny default, short training."""
    env = project_env()
    project = tmp_path / "repo"
    # a clone of the committed pipeline (what a teammate has), not the dev's workspace
    run(["git", "clone", "-q", str(REPO_ROOT), str(project)], tmp_path, env)
    run(["git", "config", "user.email", "test@example.com"], project, env)
    run(["git", "config", "user.name", "test"], project, env)
    for name in (".dvc/cache",):  # reuse already-built data stages if the dev's repo has them
        src = REPO_ROOT / name
        if src.is_dir():
            shutil.copytree(src, project / name, dirs_exist_ok=True)
    short = os.environ.get("SWEEP_SHORT_PARAMS", "train_stage1.epochs=1")  # space-separated key=value
    extra = [arg for pair in short.split() for arg in ("-S", pair)]
    run([PY, "-m", "factory_sam3.tracking", "init"], project, env)
    run([DVC, "exp", "run", "--queue", "-S", "train_stage1.lr_scale=0.05,0.2", *extra, "train_stage1"], project, env)
    run_queue(project, env, timeout_s=1800)

    exps = experiments_from_show(project, env)
    assert len(exps) == 2, exps
    runs = mlflow_runs(project, "train_stage1")
    assert len(runs) == 2, [r.data.tags for r in runs]
    for logged in runs:
        name = logged.data.tags["dvc_exp_name"]
        assert name in exps
        want = float(exps[name]["params"]["train_stage1"]["lr_scale"])
        assert float(logged.data.params["train_stage1.lr_scale"]) == want, logged.data.params  # README's filter
        assert exps[name]["metrics"].get("metrics/train_stage1.json"), exps[name]
    assert_logged_in_repo(project, runs)
