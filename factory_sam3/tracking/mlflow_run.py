"""MLflow logging for pipeline stages that never stalls or kills training.

Use::

    from factory_sam3.tracking import stage_run
    with stage_run("train_stage1", params={"lr_scale": 0.1, ...}) as run:
        run.log_metrics({"loss": 1.2}, step=3)
        run.log_artifact("metrics/train_stage1.json")

* Store: ``MLFLOW_TRACKING_URI`` if set (team server), else the local store in the repository
  (see ``store.py``; correct inside ``dvc exp run --queue`` temp copies).
* Tags: stage, git commit, DVC experiment name and baseline, dataset version, params hash, pipeline id
  (see ``context.py``).
* Server down: one fast health probe at start, bounded HTTP retries per call, and on the first failure
  the run moves to the local store: everything logged so far is replayed there, the run is tagged
  ``tracking_fallback=true`` with the intended server and the reason, a warning is printed, and
  ``python -m factory_sam3.tracking sync`` copies it to the server later. Logging errors are warnings,
  never exceptions: the stage's DVC metrics are written by the stage itself and stay complete.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from factory_sam3.tracking import store
from factory_sam3.tracking.context import run_tags

MAX_PARAM_CHARS = 6000  # MLflow's limit for a param value


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` so nested sections become searchable params."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _warn(message: str) -> None:
    print(f"warning: mlflow: {message}", file=sys.stderr, flush=True)


class StageRun:
    """One MLflow run of one stage. Every call is journaled so the run can move stores mid-way."""

    def __init__(self, stage: str, experiment: str, uri: str, tags: Mapping[str, str]):
        self.stage = stage
        self.experiment = experiment
        self.uri = uri
        self.fallback_reason: str | None = None
        self._journal: list[tuple[str, tuple]] = []
        self._client = None
        self.run_id = ""
        self._param_values: dict[str, str] = {}
        self.tags: dict[str, str] = {}  # every tag set so far (lineage copies some onto model versions)
        self.set_tags(tags)

    # -- public API (stable: stages call these) -------------------------------------------------
    @property
    def fell_back(self) -> bool:
        return self.fallback_reason is not None

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(str(k), float(v), now, int(step or 0)) for k, v in metrics.items()]
        if batch:
            self._call("log_batch", lambda c, r, b=batch: c.log_batch(r, metrics=b), ("metrics", batch))

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = {k: str(v)[:MAX_PARAM_CHARS] for k, v in flatten(params).items()}
        # MLflow refuses to change a logged param; log each key once (first value wins)
        fresh = {k: v for k, v in flat.items() if k not in self._param_values}
        self._param_values.update(fresh)
        items = [Param(k, v) for k, v in fresh.items()]
        for start in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            chunk = items[start : start + 100]
            self._call("log_batch", lambda c, r, b=chunk: c.log_batch(r, params=b), ("params", chunk))

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        path = str(Path(path).resolve())
        if not os.path.exists(path):
            _warn(f"artifact {path} does not exist, not logged")
            return
        if os.path.isdir(path):
            self._call("log_artifacts", lambda c, r: c.log_artifacts(r, path, artifact_path), ())
        else:
            self._call("log_artifact", lambda c, r: c.log_artifact(r, path, artifact_path), ())

    def log_dict(self, data: Any, artifact_file: str) -> None:
        self._call("log_dict", lambda c, r: c.log_dict(r, data, artifact_file), ())

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(str(k), str(v)[:8000]) for k, v in tags.items()]
        self.tags.update({item.key: item.value for item in items})
        if items:
            self._call("log_batch", lambda c, r, b=items: c.log_batch(r, tags=b), ("tags", items))

    def call(self, name: str, fn: Callable[[Any, str], None]) -> None:
        """``fn(client, run_id)`` in the run's store, journaled like the calls above (so it follows the
        run to the local store on a fallback); errors are warnings. Used for the model registry."""
        self._call(name, fn, ())

    # -- machinery ---------------------------------------------------------------------------------
    def _start(self) -> None:
        reason = store.probe_server(self.uri)
        if reason is None:
            try:
                self._open(self.uri)
                self._replay()  # tags and params given before the run existed
                return
            except Exception as err:  # server reachable but refusing (auth, 5xx): same as down
                reason = f"{type(err).__name__}: {err}"
        self._fall_back(reason)

    def _open(self, uri: str) -> None:
        client, exp_id = store.open_client(uri, self.experiment)
        run = client.create_run(exp_id, run_name=self._run_name())
        self._client, self.run_id = client, run.info.run_id

    def _run_name(self) -> str:
        exp_name = os.environ.get("DVC_EXP_NAME")
        return f"{self.stage} ({exp_name})" if exp_name else self.stage

    def _fall_back(self, reason: str) -> None:
        local = store.local_store_uri()
        if self.fell_back or self.uri == local:
            raise RuntimeError(reason)
        _warn(
            f"tracking server {self.uri} unreachable ({reason}); logging this run to the local store "
            f"{local} instead (tag tracking_fallback=true). Copy it later with: "
            f"python -m factory_sam3.tracking sync"
        )
        self.fallback_reason = reason
        self._open(local)
        self._replay()
        from mlflow.entities import RunTag

        self._client.log_batch(
            self.run_id,
            tags=[
                RunTag("tracking_fallback", "true"),
                RunTag("tracking_intended_uri", self.uri),
                RunTag("tracking_fallback_reason", reason[:5000]),
            ],
        )

    def _replay(self) -> None:
        for _name, (fn, _payload) in self._journal:
            fn(self._client, self.run_id)

    def _call(self, name: str, fn: Callable, payload: tuple) -> None:
        self._journal.append((name, (fn, payload)))
        if self._client is None:  # not started yet: replayed on start
            return
        try:
            fn(self._client, self.run_id)
        except Exception as err:
            if store.is_http(self.uri) and not self.fell_back:
                try:
                    self._fall_back(f"{type(err).__name__}: {err}"[:2000])
                    return
                except Exception as inner:
                    err = inner
            _warn(f"{name} failed ({type(err).__name__}: {err}); training continues")

    def _finish(self, status: str) -> None:
        if self._client is None:
            return
        try:
            self._client.set_terminated(self.run_id, status=status)
        except Exception as err:
            if store.is_http(self.uri) and not self.fell_back:
                try:
                    self._fall_back(f"{type(err).__name__}: {err}"[:2000])
                    self._client.set_terminated(self.run_id, status=status)
                    return
                except Exception as inner:
                    err = inner
            _warn(f"could not close run {self.run_id} ({err})")


@contextlib.contextmanager
def stage_run(
    stage: str,
    params: Mapping[str, Any] | None = None,
    experiment: str | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Iterator[StageRun]:
    """Open an MLflow run for ``stage`` with params (flattened) and tags; close it FINISHED/FAILED."""
    all_tags = run_tags(stage)
    all_tags.update({str(k): str(v) for k, v in (tags or {}).items()})
    run = StageRun(stage, store.experiment_name(experiment), store.tracking_uri(), all_tags)
    if params:
        run.log_params(params)
    try:
        run._start()
    except Exception as err:
        _warn(f"could not open a run in any store ({type(err).__name__}: {err}); this stage is not tracked")
    status = "FINISHED"
    try:
        yield run
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        run._finish(status)
