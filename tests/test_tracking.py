"""MLflow tracking: local store under DVC_ROOT, tags, a real `mlflow server` on loopback, server down."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers_mlflow import MlflowServer
from helpers_s3 import VENV_BIN, free_port, make_tiny_project, project_env, run

pytestmark = pytest.mark.integration  # stage subprocesses in scratch dvc projects, real mlflow servers

PY = sys.executable
DVC = str(VENV_BIN / "dvc")
# With the server down a stage may take at most this much longer than with the local store
# (MLflow's own defaults would add ~4 minutes per call). Compared with a baseline measured in the same
# session, because the shared test machine's speed varies a lot.
DOWN_EXTRA_S = 30


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def only_run(uri: str, experiment: str = "factory-sam3"):
    exp = client(uri).get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment} in {uri}"
    runs = client(uri).search_runs([exp.experiment_id])
    assert len(runs) == 1, f"{len(runs)} runs in {uri}"
    return runs[0]


@pytest.fixture(scope="module")
def baseline_repro_s(tmp_path_factory) -> float:
    """Seconds a `dvc repro` of the tiny project takes with the local store (no server involved)."""
    project = make_tiny_project(tmp_path_factory.mktemp("baseline") / "p", project_env())
    start = time.monotonic()
    run([DVC, "repro", "-q"], project, project_env(DVC_ROOT=str(project)), timeout=300)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield srv
    srv.stop()


def run_stage(project: Path, env: dict, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    result = subprocess.run([PY, "train.py"], cwd=project, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result, time.monotonic() - start


def test_local_store_resolves_to_dvc_root_with_tags(tmp_path):
    root = tmp_path / "repo"
    (root / ".dvc").mkdir(parents=True)
    # the stage runs in another folder (like a queued experiment's .dvc/tmp/exps/tmpXXXX copy)
    work = make_tiny_project(tmp_path / "work", project_env())
    (work / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  fetch:\n    cmd: x\n    outs:\n    - path: data/raw\n      md5: abc123.dir\n"
    )
    commit = run(["git", "rev-parse", "HEAD"], work, project_env()).stdout.strip()
    env = project_env(DVC_ROOT=str(root), DVC_EXP_NAME="brave-lion", DVC_EXP_BASELINE_REV=commit)
    result, _ = run_stage(work, env)
    assert "FELL_BACK False" in result.stdout

    assert (root / "mlflow.db").is_file()
    for leftover in ("mlflow.db", "mlruns", "mlartifacts"):
        assert not (work / leftover).exists(), f"{leftover} written into the stage's working folder"
    uri = f"sqlite:///{root / 'mlflow.db'}"
    logged = only_run(uri)
    tags, params = logged.data.tags, logged.data.params
    assert tags["stage"] == "train"
    assert tags["dvc_exp_name"] == "brave-lion"
    assert tags["dvc_baseline_rev"] == commit
    assert tags["git_commit"] == commit and tags["mlflow.source.git.commit"] == commit
    assert tags["dataset.data/raw"] == "abc123.dir"
    assert len(tags["dataset_version"]) == 12 and tags["dataset_version"] != "unknown"
    assert tags["pipeline_id"].startswith(commit[:10] + "-brave-lion-")
    assert len(tags["params_hash"]) == 12
    assert "tracking_fallback" not in tags
    assert params["train.lr_scale"] == "0.1" and params["train.steps"] == "4"
    history = client(uri).get_metric_history(logged.info.run_id, "loss")
    assert [m.step for m in history] == [0, 1, 2, 3]
    assert history[-1].value == pytest.approx(0.9**4)
    artifacts = {a.path for a in client(uri).list_artifacts(logged.info.run_id)}
    assert {"train.json", "config"} <= artifacts
    assert logged.info.artifact_uri.startswith((root / "mlartifacts").as_uri())
    assert list((root / "mlartifacts").rglob("train.json")), "artifact not stored under the repo"


def test_concurrent_first_runs_share_one_healthy_store(tmp_path):
    root = tmp_path / "repo"
    (root / ".dvc").mkdir(parents=True)
    env = project_env(DVC_ROOT=str(root))
    projects = [make_tiny_project(tmp_path / f"w{i}", env, lr_scale=0.1 * (i + 1)) for i in range(3)]
    procs = [
        subprocess.Popen([PY, "train.py"], cwd=p, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for p in projects
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        # no store trouble (locked database, fallback); the tiny project has no data stages, so the one
        # expected warning is that its dataset_version is 'unknown'
        unexpected = [line for line in err.lower().splitlines() if "warning" in line and "dataset_version" not in line]
        assert not unexpected, err
    uri = f"sqlite:///{root / 'mlflow.db'}"
    exp = client(uri).get_experiment_by_name("factory-sam3")
    runs = client(uri).search_runs([exp.experiment_id])
    assert sorted(r.data.params["train.lr_scale"] for r in runs) == ["0.1", "0.2", "0.30000000000000004"]


def test_server_receives_run(tmp_path, server):
    project = make_tiny_project(tmp_path / "p", project_env())
    env = project_env(DVC_ROOT=str(project), MLFLOW_TRACKING_URI=server.uri)
    result, _ = run_stage(project, env)
    assert "FELL_BACK False" in result.stdout
    run_id = result.stdout.split("RUN_ID ")[1].split()[0]
    logged = client(server.uri).get_run(run_id)
    assert logged.data.params["train.lr_scale"] == "0.1"
    assert [m.step for m in client(server.uri).get_metric_history(run_id, "loss")] == [0, 1, 2, 3]
    assert {"train.json", "config"} <= {a.path for a in client(server.uri).list_artifacts(run_id)}
    assert not (project / "mlflow.db").exists(), "nothing goes to the local store when the server is up"


def _hung_listener() -> tuple[socket.socket, str]:
    """A socket that completes TCP handshakes (backlog) but never answers: a hung server."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("outage", ["stopped", "hung"])
def test_server_down_falls_back_fast_then_syncs(tmp_path, server, outage, baseline_repro_s):
    project = make_tiny_project(tmp_path / "p", project_env())
    listener = None
    if outage == "stopped":
        dead_uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    else:
        listener, dead_uri = _hung_listener()
    try:
        env = project_env(DVC_ROOT=str(project), MLFLOW_TRACKING_URI=dead_uri)
        start = time.monotonic()
        result = run([DVC, "repro", "-q"], project, env, timeout=180)
        elapsed = time.monotonic() - start
    finally:
        if listener:
            listener.close()
    assert elapsed < baseline_repro_s + DOWN_EXTRA_S, (
        f"dvc repro took {elapsed:.1f} s with the server {outage}, {baseline_repro_s:.1f} s with the local store"
    )
    assert "unreachable" in result.stderr and "python -m factory_sam3.tracking sync" in result.stderr
    # DVC metrics complete
    shown = run([DVC, "metrics", "show", "--json"], project, env).stdout
    assert '"steps": 4' in shown.replace("\n", " ").replace("  ", " ") or '"steps":4' in shown.replace(" ", "")
    # the run is in the fallback (local) store, tagged
    local_uri = f"sqlite:///{project / 'mlflow.db'}"
    logged = only_run(local_uri)
    assert logged.data.tags["tracking_fallback"] == "true"
    assert logged.data.tags["tracking_intended_uri"] == dead_uri
    assert len(client(local_uri).get_metric_history(logged.info.run_id, "loss")) == 4

    # later, with a server up: sync copies it over (metrics history, params, tags, artifacts)
    sync_env = project_env(DVC_ROOT=str(project), MLFLOW_TRACKING_URI=server.uri)
    out = run([PY, "-m", "factory_sam3.tracking", "sync"], project, sync_env).stdout
    assert "copied 1 run(s)" in out
    synced_to = client(local_uri).get_run(logged.info.run_id).data.tags["tracking_synced_to"]
    new_id = synced_to.split("#")[1]
    copy = client(server.uri).get_run(new_id)
    assert copy.data.params == logged.data.params
    assert copy.data.tags["dvc_exp_name"] == logged.data.tags["dvc_exp_name"]
    assert [m.value for m in client(server.uri).get_metric_history(new_id, "loss")] == [
        m.value for m in client(local_uri).get_metric_history(logged.info.run_id, "loss")
    ]
    assert "train.json" in {a.path for a in client(server.uri).list_artifacts(new_id)}
    again = run([PY, "-m", "factory_sam3.tracking", "sync"], project, sync_env).stdout
    assert "copied 0 run(s)" in again


def test_server_dies_mid_run_everything_lands_in_fallback(tmp_path, baseline_repro_s):
    doomed = MlflowServer(tmp_path / "doomed").start()
    try:
        project = make_tiny_project(tmp_path / "p", project_env(), steps=5)
        env = project_env(
            DVC_ROOT=str(project),
            MLFLOW_TRACKING_URI=doomed.uri,
            TINY_KILL_PGID=str(doomed.process.pid),
            TINY_KILL_AFTER="1",
        )
        result, elapsed = run_stage(project, env)
    finally:
        doomed.stop()
    assert elapsed < baseline_repro_s + DOWN_EXTRA_S
    assert "FELL_BACK True" in result.stdout, result.stderr
    local_uri = f"sqlite:///{project / 'mlflow.db'}"
    logged = only_run(local_uri)
    assert logged.data.tags["tracking_fallback"] == "true"
    assert logged.data.params["train.lr_scale"] == "0.1"
    assert [m.step for m in client(local_uri).get_metric_history(logged.info.run_id, "loss")] == [0, 1, 2, 3, 4]
    assert logged.info.status == "FINISHED"
