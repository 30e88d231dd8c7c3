"""Tags that tie an MLflow run to its code, data, DVC experiment and pipeline run.

Tag                 Meaning
git_commit          ``git rev-parse HEAD`` where the stage ran (also as ``mlflow.source.git.commit``)
git_dirty           "true" if tracked files differed from the commit (queued runs: the -S changes)
dvc_exp_name        ``DVC_EXP_NAME`` (empty for plain ``dvc repro`` / direct runs)
dvc_baseline_rev    ``DVC_EXP_BASELINE_REV``: the commit the experiment was based on
dvc_queued          "true" when running in a ``dvc exp run --queue`` temp copy
stage               the DVC stage name
dataset_version     12 hex digits hashing the outs of the data stages in dvc.lock
dataset.<out>       each data stage out's md5 from dvc.lock
params_hash         12 hex digits hashing the params.yaml values the stage declares in dvc.yaml
                    plus dataset_version: equal hashes mean DVC's run cache treats the runs as the same
pipeline_id         ``<commit[:10]>-<exp name or 'workspace'>-<params.yaml hash[:8]>``: identical for
                    all stages of one ``dvc repro`` / one experiment, so Stage 1, Stage 2 and evaluate
                    of one pipeline run are found together (``tags.pipeline_id = '...'``)
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from factory_sam3.errors import warn

# Stages whose outs make up "the dataset" (fetch -> extract_frames -> to_coco -> to_ytvis).
DATA_STAGES = ("fetch", "extract_frames", "to_coco", "to_ytvis")


def _short_hash(data: Any, length: int = 12) -> str:
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def _git(*args: str, cwd: Path) -> str:
    try:
        result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def _load_yaml(path: Path) -> dict:
    """``path`` parsed; a missing file is ``{}``, an unreadable one ``{}`` with a warning naming it (the tags
    built from it say so: dataset_version "unknown")."""
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        warn(f"mlflow: {path} unreadable ({type(err).__name__}: {err}); its run tags are left out")
        return {}
    if not isinstance(data, dict):
        warn(f"mlflow: {path}: top level is not a mapping; its run tags are left out")
        return {}
    return data


def dataset_hashes(workdir: Path) -> dict[str, str]:
    """``{out path: md5}`` of the data stages' outs recorded in ``workdir/dvc.lock``."""
    lock = _load_yaml(workdir / "dvc.lock").get("stages") or {}
    hashes: dict[str, str] = {}
    for stage in DATA_STAGES:
        for out in (lock.get(stage) or {}).get("outs") or []:
            if isinstance(out, dict) and out.get("path"):
                hashes[str(out["path"])] = str(out.get("md5") or out.get("hash") or out.get("etag") or "")
    return hashes


UNKNOWN_DATASET = "unknown"


def dataset_version(hashes: dict[str, str]) -> str:
    """12 hex digits over the data stages' outs, or "unknown" (run_tags warns then)."""
    return _short_hash(sorted(hashes.items())) if hashes else UNKNOWN_DATASET


def stage_params(stage: str, workdir: Path) -> dict[str, Any]:
    """The params.yaml values that dvc.yaml declares for ``stage`` (what DVC's run cache keys on)."""
    declared = ((_load_yaml(workdir / "dvc.yaml").get("stages") or {}).get(stage) or {}).get("params") or []
    params = _load_yaml(workdir / "params.yaml")
    picked: dict[str, Any] = {}
    for entry in declared:
        keys = [entry] if isinstance(entry, str) else []
        if isinstance(entry, dict):  # {other_file.yaml: [keys]}: record the names only
            picked.update({str(k): v for k, v in entry.items()})
            continue
        for key in keys:
            value: Any = params
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            picked[key] = value
    return picked


def params_hash(stage: str, workdir: Path, data_version: str) -> str:
    return _short_hash({"stage": stage, "params": stage_params(stage, workdir), "dataset": data_version})


def pipeline_id(commit: str, exp_name: str, workdir: Path) -> str:
    params_file = workdir / "params.yaml"
    params_digest = hashlib.sha256(params_file.read_bytes()).hexdigest()[:8] if params_file.is_file() else "noparams"
    return f"{(commit or 'nogit')[:10]}-{exp_name or 'workspace'}-{params_digest}"


def run_tags(stage: str, workdir: Path | None = None) -> dict[str, str]:
    workdir = (workdir or Path.cwd()).resolve()
    commit = _git("rev-parse", "HEAD", cwd=workdir)
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no", cwd=workdir))
    exp_name = os.environ.get("DVC_EXP_NAME", "")
    baseline = os.environ.get("DVC_EXP_BASELINE_REV", "")
    hashes = dataset_hashes(workdir)
    data_version = dataset_version(hashes)
    if data_version == UNKNOWN_DATASET:
        warn(
            f"mlflow: {workdir / 'dvc.lock'} records no outs of the data stages {', '.join(DATA_STAGES)}: "
            f"this run's tag dataset_version is '{UNKNOWN_DATASET}' (run the pipeline with `dvc repro` to tie "
            "runs to their data)"
        )
    tags = {
        "stage": stage,
        "git_commit": commit,
        "git_dirty": str(dirty).lower(),
        "dvc_exp_name": exp_name,
        "dvc_baseline_rev": baseline,
        "dvc_queued": str(".dvc/tmp/exps" in workdir.as_posix()).lower(),
        "dataset_version": data_version,
        "params_hash": params_hash(stage, workdir, data_version),
        "pipeline_id": pipeline_id(baseline or commit, exp_name, workdir),
    }
    if commit:
        tags["mlflow.source.git.commit"] = commit
    tags.update({f"dataset.{path}": md5 for path, md5 in hashes.items()})
    return tags
