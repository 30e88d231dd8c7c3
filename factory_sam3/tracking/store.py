"""Where runs are stored: a local MLflow store in the repository, or a team server.

Default (no ``MLFLOW_TRACKING_URI``): ``sqlite:///<repo>/mlflow.db`` with artifacts under
``<repo>/mlartifacts/<experiment>``. ``<repo>`` is ``DVC_ROOT`` when DVC runs the stage, because
``dvc exp run --queue`` executes stages in ``.dvc/tmp/exps/tmpXXXX`` and deletes that folder
afterwards: a store resolved against the working directory would be lost with it.

Two queued runs creating a fresh SQLite store at the same time corrupt it (alembic migrations race),
so opening the local store and creating the experiment happen under a file lock.
"""

from __future__ import annotations

import os
from pathlib import Path

# Our commands never phone home, and a dead tracking server must not stall a stage for minutes
# (MLflow's defaults: 7 retries, 120 s timeout; ~4 min per call). The user's environment wins.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

DEFAULT_EXPERIMENT = "factory-sam3"
STORE_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
LOCK_NAME = ".store.lock"
LOCK_TIMEOUT_S = 300


def _find_dvc_root(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        if (folder / ".dvc").is_dir():
            return folder
    return None


def repo_root() -> Path:
    """The repository the run belongs to, also inside `dvc exp run --queue` temp copies.

    ``DVC_ROOT`` (set by DVC for every stage command, pointing at the main repository even for
    queued runs) wins; outside DVC the nearest folder holding ``.dvc/`` above the working
    directory; else the working directory.
    """
    env_root = os.environ.get("DVC_ROOT")
    if env_root:
        return Path(env_root).resolve()
    cwd = Path.cwd().resolve()
    return _find_dvc_root(cwd) or cwd


def local_store_uri(root: Path | None = None) -> str:
    return f"sqlite:///{(root or repo_root()) / STORE_FILE}"


def local_artifact_root(root: Path | None = None) -> Path:
    return (root or repo_root()) / ARTIFACTS_DIR


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` (a team server) or the local store in the repository."""
    return os.environ.get("MLFLOW_TRACKING_URI") or local_store_uri()


def is_local_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:///")


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def experiment_name(explicit: str | None = None, params_file: str | os.PathLike | None = None) -> str:
    """Explicit name, else ``mlflow.experiment`` from the params file (``params_file``, else params.yaml in the
    working directory or the repository), else the default. A params file that cannot be read, or whose
    ``mlflow`` section is not a mapping, is a warning naming it and the experiment used instead: never a
    silent switch to another experiment."""
    if explicit:
        return explicit
    from factory_sam3 import config
    from factory_sam3.errors import UserError, warn

    candidates = (
        [Path(params_file)] if params_file else [Path.cwd() / config.PARAMS_FILE, repo_root() / config.PARAMS_FILE]
    )
    for path in candidates:
        if not path.is_file():
            continue
        try:
            section = config.load(path).get("mlflow") or {}
        except UserError as err:
            warn(f"mlflow: {err.message}; runs go to experiment '{DEFAULT_EXPERIMENT}'")
            return DEFAULT_EXPERIMENT
        if not isinstance(section, dict):
            warn(f"mlflow: {path}: section 'mlflow' must be a mapping; runs go to experiment '{DEFAULT_EXPERIMENT}'")
            return DEFAULT_EXPERIMENT
        return str(section.get("experiment") or DEFAULT_EXPERIMENT)
    return DEFAULT_EXPERIMENT


def store_lock(root: Path | None = None):
    """A cross-process lock serialising creation/migration of the local store."""
    from filelock import FileLock

    folder = local_artifact_root(root)
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder / LOCK_NAME), timeout=LOCK_TIMEOUT_S)


# MLflow 3's UI opens an experiment without this tag as a GenAI (traces) page; ours are training runs
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def _mark_training_experiment(client, exp) -> None:
    if exp is not None and not all(exp.tags.get(k) == v for k, v in EXPERIMENT_KIND.items()):
        for key, value in EXPERIMENT_KIND.items():
            client.set_experiment_tag(exp.experiment_id, key, value)


def open_client(uri: str, experiment: str, root: Path | None = None):
    """Return ``(MlflowClient, experiment_id)``, creating the experiment if needed.

    For the local store, schema creation and experiment creation run under the store lock, and the
    experiment's artifact location is ``<repo>/mlartifacts/<experiment>`` (never the cwd).
    """
    from mlflow.tracking import MlflowClient

    if is_local_sqlite(uri):
        root = root or Path(uri[len("sqlite:///") :]).parent
        with store_lock(root):
            client = MlflowClient(tracking_uri=uri)
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                location = local_artifact_root(root) / experiment
                location.mkdir(parents=True, exist_ok=True)
                exp_id = client.create_experiment(experiment, artifact_location=location.as_uri(), tags=EXPERIMENT_KIND)
            else:
                exp_id = exp.experiment_id
                _mark_training_experiment(client, exp)
        return client, exp_id

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        _mark_training_experiment(client, exp)
        return client, exp.experiment_id
    try:
        return client, client.create_experiment(experiment, tags=EXPERIMENT_KIND)
    except Exception:  # another run created it in the meantime
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise
        return client, exp.experiment_id


def probe_server(uri: str, timeout_s: float = 5.0) -> str | None:
    """Check an http(s) tracking server quickly; return None if healthy, else the reason."""
    if not is_http(uri):
        return None
    import requests

    try:
        response = requests.get(uri.rstrip("/") + "/health", timeout=(min(timeout_s, 3.0), timeout_s))
    except requests.RequestException as err:
        return f"{type(err).__name__}: {err}"
    if response.status_code != 200:
        return f"HTTP {response.status_code} from {uri}/health"
    return None


def init_store(experiment: str | None = None) -> tuple[str, str]:
    """Create the local store and experiment now (run once before `dvc queue start`)."""
    uri = local_store_uri()
    name = experiment_name(experiment)
    _, exp_id = open_client(uri, name)
    return uri, exp_id
