"""Copy runs that fell back to the local store (server was down) to the tracking server."""

from __future__ import annotations

import sys
import tempfile

from factory_sam3.tracking import store

FALLBACK_FILTER = "tags.tracking_fallback = 'true'"


def _copy_run(src, dst, run, dst_exp_id: str) -> str:
    from mlflow.entities import Metric, Param, RunTag

    info, data = run.info, run.data
    new = dst.create_run(dst_exp_id, start_time=info.start_time, run_name=info.run_name)
    new_id = new.info.run_id
    tags = [RunTag(k, v) for k, v in data.tags.items() if k != "mlflow.runName"]
    tags.append(RunTag("tracking_synced_from", f"{store.local_store_uri()}#{info.run_id}"))
    params = [Param(k, v) for k, v in data.params.items()]
    metrics = [
        Metric(m.key, m.value, m.timestamp, m.step)
        for key in data.metrics
        for m in src.get_metric_history(info.run_id, key)
    ]
    for start in range(0, max(len(params), 1), 100):
        dst.log_batch(new_id, params=params[start : start + 100])
    for start in range(0, len(metrics), 1000):
        dst.log_batch(new_id, metrics=metrics[start : start + 1000])
    dst.log_batch(new_id, tags=tags)
    with tempfile.TemporaryDirectory() as tmp:
        if src.list_artifacts(info.run_id):
            local = src.download_artifacts(info.run_id, "", tmp)
            dst.log_artifacts(new_id, local)
    dst.set_terminated(new_id, status=info.status, end_time=info.end_time)
    return new_id


def sync(target_uri: str, experiment: str | None = None, dry_run: bool = False) -> list[tuple[str, str]]:
    """Copy every fallback run not yet synced; tag the local run ``tracking_synced_to``. Returns pairs."""
    from mlflow.tracking import MlflowClient

    if not store.is_http(target_uri) and not target_uri.startswith("sqlite:"):
        raise ValueError(f"target {target_uri!r} is not a tracking server URI")
    local_uri = store.local_store_uri()
    if target_uri == local_uri:
        raise ValueError("target is the local store itself; set MLFLOW_TRACKING_URI or pass --to")
    reason = store.probe_server(target_uri)
    if reason:
        raise ConnectionError(f"tracking server {target_uri} unreachable: {reason}")
    src = MlflowClient(tracking_uri=local_uri)
    dst = MlflowClient(tracking_uri=target_uri)
    copied: list[tuple[str, str]] = []
    for exp in src.search_experiments():
        if experiment and exp.name != experiment:
            continue
        runs = src.search_runs([exp.experiment_id], filter_string=FALLBACK_FILTER, max_results=5000)
        pending = [r for r in runs if not r.data.tags.get("tracking_synced_to")]
        if not pending:
            continue
        if dry_run:
            copied += [(r.info.run_id, "") for r in pending]
            continue
        _, dst_exp_id = store.open_client(target_uri, exp.name)
        for run in pending:
            new_id = _copy_run(src, dst, run, dst_exp_id)
            src.set_tag(run.info.run_id, "tracking_synced_to", f"{target_uri}#{new_id}")
            copied.append((run.info.run_id, new_id))
            print(f"synced {run.info.run_id} -> {target_uri} run {new_id}", file=sys.stderr)
    return copied
