"""Model lineage, both ways: a DVC model artifact <-> its MLflow run and registered model version.

A training stage calls, inside its ``stage_run``::

    record_model(run, "stage1-model")       # the name of an ``artifacts:`` entry in dvc.yaml

which, in the run's store (the server, or the local store it fell back to):

* tags the run ``dvc_model`` (artifact name), ``dvc_model_path``, ``dvc_model_md5`` (the md5 DVC writes to
  dvc.lock for that out, computed here with DVC's own hashing) and ``dvc_model_commit`` (the commit the
  stage ran on), and logs ``dvc_model/dvc_model.json`` with the same plus the ``dvc artifacts get`` command;
* registers a version of the MLflow registered model ``<experiment>.<artifact>`` whose source is that
  pointer (``runs:/<run id>/dvc_model``) and whose tags are stage, pipeline_id, dataset_version,
  dvc_exp_name, git_commit, dvc_path and dvc_md5.

From a model: ``python -m factory_sam3.tracking model models/stage1`` hashes the folder and finds the
versions (and so the runs, data version and commit) with that md5. From a run: its ``dvc_model*`` tags,
or the registry's versions with that run id.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from factory_sam3.tracking.context import _git, _load_yaml

POINTER_DIR = "dvc_model"
# a registry that answered "no" is not a server that is down: only these move the run to the local store
SERVER_DOWN_CODES = ("INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "ENDPOINT_NOT_FOUND")
# the run tags copied onto the model version, so the registry alone answers "which data, code, pipeline"
VERSION_TAGS = ("stage", "pipeline_id", "dataset_version", "dvc_exp_name", "git_commit")


def dvc_md5(path: str | os.PathLike) -> str:
    """The md5 DVC records for ``path`` (a file, or a folder as ``<md5>.dir``), with DVC's own hashing."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory() as scratch:
        _, _, obj = build(HashFileDB(fs, scratch), os.fspath(Path(path).resolve()), fs, "md5", dry_run=True)
    return obj.hash_info.value


def artifact_entry(name: str, workdir: Path) -> dict[str, Any]:
    """The ``artifacts:`` entry of dvc.yaml named ``name`` (KeyError names what exists)."""
    artifacts = _load_yaml(workdir / "dvc.yaml").get("artifacts") or {}
    if name not in artifacts:
        raise KeyError(f"no artifact '{name}' in {workdir / 'dvc.yaml'} (has: {sorted(artifacts)})")
    return artifacts[name]


def registered_name(experiment: str, artifact: str) -> str:
    return f"{experiment}.{artifact}"


def model_pointer(artifact: str, workdir: Path) -> dict[str, str]:
    entry = artifact_entry(artifact, workdir)
    path = str(entry["path"])
    commit = _git("rev-parse", "HEAD", cwd=workdir)
    exp_name = os.environ.get("DVC_EXP_NAME", "")
    repo = _git("config", "--get", "remote.origin.url", cwd=workdir) or "."
    # the commit that records this model in dvc.lock is the one made after the run (or the DVC experiment)
    rev = exp_name or "<the commit that records this dvc.lock>"
    return {
        "artifact": artifact,
        "type": str(entry.get("type", "")),
        "path": path,
        "md5": dvc_md5(workdir / path),
        "git_commit": commit,
        "dvc_exp_name": exp_name,
        "get": f"dvc artifacts get {repo} {artifact} --rev {rev}",
    }


def record_model(run, artifact: str, workdir: Path | None = None) -> None:
    """Tag ``run`` (a ``StageRun``) with the model's DVC identity and register an MLflow model version
    pointing to it. Never raises: lineage is logged like every other metric (warnings only)."""
    workdir = (workdir or Path.cwd()).resolve()
    try:
        pointer = model_pointer(artifact, workdir)
    except Exception as err:  # a missing model or dvc.yaml entry must not fail a finished training
        print(f"warning: mlflow: model lineage for '{artifact}' not recorded ({err})", flush=True)
        return
    run.set_tags(
        {
            "dvc_model": artifact,
            "dvc_model_path": pointer["path"],
            "dvc_model_md5": pointer["md5"],
            "dvc_model_commit": pointer["git_commit"],
        }
    )
    run.log_dict(pointer, f"{POINTER_DIR}/dvc_model.json")
    run_tags = dict(run.tags)
    version_tags = {key: run_tags.get(key, "") for key in VERSION_TAGS}
    version_tags.update({"dvc_artifact": artifact, "dvc_path": pointer["path"], "dvc_md5": pointer["md5"]})
    name = registered_name(run.experiment, artifact)
    description = (
        f"DVC artifact {artifact} ({pointer['path']}, md5 {pointer['md5']}), trained on dataset "
        f"{version_tags['dataset_version']} at commit {pointer['git_commit'][:10]}. "
        f"Get it: {pointer['get']}"
    )

    def register(client, run_id: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            client.create_registered_model(name, description=f"{pointer['type']} {artifact} (DVC artifact)")
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        try:
            client.create_model_version(
                name, f"runs:/{run_id}/{POINTER_DIR}", run_id=run_id, tags=version_tags, description=description
            )
        except MlflowException as err:
            if err.error_code in SERVER_DOWN_CODES:
                raise  # the run moves to the local store and registers there (StageRun's fallback)
            print(
                f"warning: mlflow: the registry refused {name} ({err.error_code}: {err}); the run keeps "
                f"its dvc_model tags",
                flush=True,
            )

    run.call("register_model_version", register)


def versions_of(path: str | os.PathLike, uri: str, md5: str | None = None) -> list:
    """Registered model versions whose ``dvc_md5`` is the md5 of the model at ``path``."""
    from mlflow.tracking import MlflowClient

    digest = md5 or dvc_md5(path)
    return list(MlflowClient(tracking_uri=uri).search_model_versions(f"tags.dvc_md5 = '{digest}'"))


def describe(version) -> str:
    tags = version.tags
    return json.dumps(
        {
            "model": version.name,
            "version": version.version,
            "run_id": version.run_id,
            **{k: tags.get(k, "") for k in (*VERSION_TAGS, "dvc_path", "dvc_md5")},
        },
        indent=2,
    )
