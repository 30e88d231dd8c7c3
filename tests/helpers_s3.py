"""A real S3 endpoint on loopback for tests and benchmarks: moto's standalone server as a process.

No in-process mocks: DVC talks HTTP to ``http://127.0.0.1:<port>`` exactly as it would to MinIO.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoServer:
    """``moto_server -H 127.0.0.1 -p PORT`` in its own process; ``stop()`` kills it, ``pause()`` freezes it
    (SIGSTOP: the socket still accepts connections but nothing answers, like a hung endpoint)."""

    def __init__(self, log_path: Path, port: int | None = None):
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60.0) -> MotoServer:
        binary = VENV_BIN / "moto_server"
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.process.returncode}; see {self.log_path}")
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1).read()
                return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"moto_server did not answer on {self.endpoint} within {timeout_s} s")

    def create_bucket(self, bucket: str) -> None:
        import boto3

        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket=bucket)

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGCONT)  # a paused process must be able to die cleanly
        self.process.kill()
        self.process.wait(timeout=30)


def s3_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for dvc subprocesses: fake credentials, venv first on PATH, no analytics."""
    env = dict(os.environ)
    env.update(FAKE_CREDENTIALS)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env.pop("AWS_PROFILE", None)
    env.update(extra or {})
    return env


def project_env(**extra: str) -> dict[str, str]:
    """Environment for a stage / dvc subprocess in a scratch project: no inherited tracking URI or DVC
    experiment variables, this repository importable, venv first on PATH, no analytics."""
    env = dict(os.environ)
    for key in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        env.pop(key, None)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env.update(extra)
    return env


def run(
    cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300, check: bool = True
) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def init_repo(path: Path, env: dict[str, str]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    run(["git", "init", "-q", "-b", "main"], path, env)
    run(["git", "config", "user.email", "test@example.com"], path, env)
    run(["git", "config", "user.name", "test"], path, env)
    run([str(VENV_BIN / "dvc"), "init", "-q"], path, env)
    run([str(VENV_BIN / "dvc"), "config", "core.autostage", "true"], path, env)


# --- shared by the tracking and sweep tests -------------------------------------------------------
# A tiny DVC stage that logs like the training stages do: params, per-step metrics, artifacts, and a
# DVC metrics file + plot. Optional: TINY_KILL_PGID=<pgid> kills that process group (the tracking server)
# after step TINY_KILL_AFTER, to test losing the server mid-run.
TINY_STAGE = """
import json, os, signal, sys, time
from pathlib import Path
import yaml
from factory_sam3.tracking import stage_run

params = yaml.safe_load(Path("params.yaml").read_text())["train"]
steps = int(params["steps"])
Path("metrics").mkdir(exist_ok=True)
Path("plots").mkdir(exist_ok=True)
with stage_run("train", params={"train": params}) as run:
    rows, loss = [], 1.0
    for step in range(steps):
        loss = loss * (1.0 - float(params["lr_scale"]))
        rows.append(f"{step},{loss}")
        run.log_metrics({"loss": loss}, step=step)
        if os.environ.get("TINY_KILL_PGID") and step == int(os.environ.get("TINY_KILL_AFTER", "1")):
            os.killpg(int(os.environ["TINY_KILL_PGID"]), signal.SIGKILL)
            time.sleep(0.5)
    Path("plots/loss.csv").write_text("step,loss\\n" + "\\n".join(rows) + "\\n")
    Path("metrics/train.json").write_text(json.dumps({"loss": loss, "steps": steps}))
    run.log_artifact("metrics/train.json")
    run.log_dict(params, "config/train.json")
    print("RUN_ID", run.run_id, "FELL_BACK", run.fell_back)
"""

TINY_DVC_YAML = """stages:
  train:
    cmd: python train.py
    deps:
      - train.py
    params:
      - train
    metrics:
      - metrics/train.json:
          cache: false
    plots:
      - plots/loss.csv:
          cache: false
          x: step
          y: loss
"""


def make_tiny_project(path: Path, env: dict[str, str], steps: int = 4, lr_scale: float = 0.1) -> Path:
    """A git + DVC project with one tracked stage (``train``); committed, ready for repro / exp run."""
    init_repo(path, env)
    (path / "train.py").write_text(TINY_STAGE)
    (path / "dvc.yaml").write_text(TINY_DVC_YAML)
    (path / "params.yaml").write_text(f"train:\n  lr_scale: {lr_scale}\n  steps: {steps}\n")
    (path / ".gitignore").write_text("/mlflow.db\n/mlartifacts/\n/mlruns/\n")
    run(["git", "add", "-A"], path, env)
    run(["git", "commit", "-q", "-m", "tiny project"], path, env)
    return path
