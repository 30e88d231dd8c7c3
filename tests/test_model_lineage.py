"""Model lineage against a real `mlflow server` and the real local DVC store: the dvc.yaml artifacts,
the run's dvc_model tags (= dvc.lock's md5), the registered model version pointing to it, and back from a
model got with `dvc artifacts get` to its run, data version and commit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from helpers_mlflow import MlflowServer
from helpers_s3 import VENV_BIN, init_repo, project_env, run

pytestmark = pytest.mark.integration  # real dvc projects, a real mlflow server, dvc artifacts get

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
DVC = str(VENV_BIN / "dvc")

STAGE = """
from pathlib import Path
import yaml
from factory_sam3.tracking import record_model, stage_run

params = yaml.safe_load(Path("params.yaml").read_text())["train"]
out = Path("models/tiny")
out.mkdir(parents=True, exist_ok=True)
(out / "model.pt").write_bytes(bytes([int(params["seed"])]) * 64)
(out / "config.json").write_text('{"seed": %d}' % params["seed"])
with stage_run("train", params={"train": params}) as run:
    run.log_metrics({"loss": 0.5}, step=0)
    record_model(run, "tiny-model")
    print("RUN_ID", run.run_id, "FELL_BACK", run.fell_back)
"""

DVC_YAML = {
    "stages": {"train": {"cmd": "python train.py", "deps": ["train.py"], "params": ["train"], "outs": ["models/tiny"]}},
    "artifacts": {
        "tiny-model": {"path": "models/tiny", "type": "model", "desc": "a tiny test model", "labels": ["test"]}
    },
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield srv
    srv.stop()


def test_pipeline_declares_both_models_as_dvc_artifacts():
    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())
    artifacts = dvc_yaml["artifacts"]
    for name, stage in (("stage1-model", "train_stage1"), ("stage2-model", "train_stage2")):
        entry = artifacts[name]
        assert entry["type"] == "model" and entry["desc"] and entry["labels"]
        assert entry["path"] in dvc_yaml["stages"][stage]["outs"], f"{name} is not {stage}'s output"


def test_missing_model_warns_and_never_raises(tmp_path, capsys):
    from factory_sam3.tracking.lineage import record_model

    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML))

    class NoRun:  # record_model must stop before touching the run
        def __getattr__(self, name):
            raise AssertionError(f"run.{name} used although the model is missing")

    record_model(NoRun(), "tiny-model", workdir=tmp_path)
    record_model(NoRun(), "no-such-artifact", workdir=tmp_path)
    out = capsys.readouterr().out
    assert "lineage for 'tiny-model' not recorded" in out and "no artifact 'no-such-artifact'" in out


def lock_md5(project: Path) -> str:
    outs = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["train"]["outs"]
    return next(o["md5"] for o in outs if o["path"] == "models/tiny")


def commit_and_push(project: Path, env: dict, message: str) -> str:
    run([DVC, "push", "-q"], project, env)
    run(["git", "add", "-A"], project, env)
    run(["git", "commit", "-qm", message], project, env)
    return run(["git", "rev-parse", "HEAD"], project, env).stdout.strip()


def test_model_to_run_and_back(tmp_path, server):
    from mlflow.tracking import MlflowClient

    from factory_sam3.tracking.lineage import dvc_md5

    env = project_env(MLFLOW_TRACKING_URI=server.uri)
    project = tmp_path / "project"
    init_repo(project, env)
    (project / "train.py").write_text(STAGE)
    (project / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (project / "params.yaml").write_text("train:\n  seed: 1\n")
    (project / ".gitignore").write_text("/mlflow.db\n/mlartifacts/\n")
    run([DVC, "remote", "add", "-d", "store", str(tmp_path / "dvc-remote")], project, env)
    run(["git", "add", "-A"], project, env)
    run(["git", "commit", "-qm", "tiny lineage project"], project, env)
    env = {**env, "DVC_ROOT": str(project)}
    client = MlflowClient(tracking_uri=server.uri)

    first_code = run(["git", "rev-parse", "HEAD"], project, env).stdout.strip()
    result = run([DVC, "repro"], project, env)
    assert "FELL_BACK False" in result.stdout, result.stdout + result.stderr
    first_run = result.stdout.split("RUN_ID ")[1].split()[0]
    first_md5 = lock_md5(project)
    first_model_commit = commit_and_push(project, env, "model v1")

    # from the run: its model's DVC path, md5 (exactly dvc.lock's) and the commit it was trained on
    tags = client.get_run(first_run).data.tags
    assert tags["dvc_model"] == "tiny-model" and tags["dvc_model_path"] == "models/tiny"
    assert tags["dvc_model_md5"] == first_md5 and tags["dvc_model_commit"] == first_code
    pointer = json.loads(
        Path(client.download_artifacts(first_run, "dvc_model/dvc_model.json", str(tmp_path))).read_text()
    )
    assert pointer["md5"] == first_md5 and "dvc artifacts get" in pointer["get"]

    # MLflow 3's UI shows the experiment as training runs (runs table, metric charts), not GenAI traces
    assert client.get_experiment_by_name("factory-sam3").tags["mlflow.experimentKind"] == "custom_model_development"

    # a second training (another seed) is version 2 of the same registered model
    (project / "params.yaml").write_text("train:\n  seed: 2\n")
    second = run([DVC, "repro"], project, env)
    second_run = second.stdout.split("RUN_ID ")[1].split()[0]
    second_md5 = lock_md5(project)
    assert second_md5 != first_md5
    commit_and_push(project, env, "model v2")

    versions = sorted(client.search_model_versions("name = 'factory-sam3.tiny-model'"), key=lambda v: int(v.version))
    assert [(v.version, v.run_id) for v in versions] == [("1", first_run), ("2", second_run)]
    v1 = versions[0]
    assert v1.source == f"runs:/{first_run}/dvc_model"
    assert v1.tags["dvc_md5"] == first_md5 and v1.tags["dvc_path"] == "models/tiny"
    assert v1.tags["stage"] == "train" and v1.tags["git_commit"] == first_code
    assert v1.tags["pipeline_id"] == tags["pipeline_id"] and v1.tags["dataset_version"] == tags["dataset_version"]
    assert "dvc_exp_name" in v1.tags

    # versions of the DVC artifact are GTO git tags (`gto register`); `dvc artifacts get` fetches one from
    # the DVC remote, then the tracking CLI goes from that model to its run, data version and commit
    run([str(VENV_BIN / "gto"), "register", "tiny-model", first_model_commit, "--version", "v1.0.0"], project, env)
    run([str(VENV_BIN / "gto"), "register", "tiny-model", "HEAD", "--version", "v2.0.0"], project, env)
    got = tmp_path / "got"
    run([DVC, "artifacts", "get", str(project), "tiny-model", "--rev", "v1.0.0", "-o", str(got)], tmp_path, env)
    latest = tmp_path / "latest"
    run([DVC, "artifacts", "get", str(project), "tiny-model", "-o", str(latest)], tmp_path, env)
    assert dvc_md5(latest) == second_md5
    assert dvc_md5(got) == first_md5
    found = run([PY, "-m", "factory_sam3.tracking", "model", str(got)], project, env).stdout
    assert f'"run_id": "{first_run}"' in found and '"version": "1"' in found and first_code in found
    assert second_run not in found
