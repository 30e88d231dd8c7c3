"""The S3 dataset remote against a real S3 endpoint on loopback (moto_server in its own process).

Each test builds a small git + DVC repository in a temp folder with its own generated dataset, so it
is fast and independent of the pipeline stages.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers_s3 import VENV_BIN, MotoServer, init_repo, run, s3_env

pytestmark = pytest.mark.integration  # a loopback S3 endpoint (moto_server) and dvc push/pull

DVC = str(VENV_BIN / "dvc")
PY = sys.executable
REPO_ROOT = Path(__file__).resolve().parents[1]
# Timeouts the tests configure on the remote (seconds) and the bound a dead remote must fail within.
CONNECT_TIMEOUT, READ_TIMEOUT = 2, 2
OUTAGE_BOUND_S = {"killed": 45, "hung": 90}  # hung: s3fs retries each call 5x on top of botocore


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    yield server
    server.stop()


@pytest.fixture
def env():
    return s3_env({"PYTHONPATH": str(REPO_ROOT)})


def write_dataset(folder: Path, seed: int, count: int = 24, size: int = 4096) -> None:
    """A deterministic folder of binary 'frames' plus an annotation file, different per seed."""
    import random

    rng = random.Random(seed)
    (folder / "frames").mkdir(parents=True, exist_ok=True)
    for index in range(count):
        (folder / "frames" / f"{index:05d}.bin").write_bytes(rng.randbytes(size))
    (folder / "annotations.json").write_text(f'{{"seed": {seed}, "count": {count}}}\n')


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def make_project(tmp: Path, server: MotoServer, bucket: str, env: dict, **setup_args) -> Path:
    repo = tmp / "origin"
    init_repo(repo, env)
    server.create_bucket(bucket)
    extra = [f"--{k.replace('_', '-')}={v}" for k, v in setup_args.items()]
    run(
        [
            PY,
            "-m",
            "factory_sam3.remote",
            "setup",
            "--url",
            f"s3://{bucket}/cache",
            "--endpoint",
            server.endpoint,
            f"--connect-timeout={CONNECT_TIMEOUT}",
            f"--read-timeout={READ_TIMEOUT}",
            *extra,
        ],
        repo,
        env,
    )
    return repo


def commit_dataset(repo: Path, env: dict, seed: int, message: str, **sizes) -> str:
    data = repo / "data" / "dataset"
    if data.exists():
        import shutil

        shutil.rmtree(data)
    write_dataset(data, seed, **sizes)
    run([DVC, "add", "-q", "data/dataset"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", message], repo, env)
    return run(["git", "rev-parse", "HEAD"], repo, env).stdout.strip()


def clone(repo: Path, dest: Path, env: dict) -> Path:
    run(["git", "clone", "-q", str(repo), str(dest)], repo.parent, env)
    return dest


def test_config_has_timeouts_and_no_credentials(tmp_path, s3, env):
    repo = make_project(tmp_path, s3, "cfg", env)
    env_with_keys = dict(env, AWS_ACCESS_KEY_ID="AKIASECRETVALUE", AWS_SECRET_ACCESS_KEY="supersecretvalue")
    run(
        [
            PY,
            "-m",
            "factory_sam3.remote",
            "setup",
            "--url",
            "s3://cfg/cache",
            "--endpoint",
            s3.endpoint,
            "--local-credentials",
        ],
        repo,
        env_with_keys,
    )
    committed = (repo / ".dvc" / "config").read_text()
    assert "endpointurl = " + s3.endpoint in committed
    assert "connect_timeout = 3" in committed and "read_timeout = 10" in committed
    assert "supersecretvalue" not in committed
    assert "supersecretvalue" in (repo / ".dvc" / "config.local").read_text()
    ignored = run(["git", "check-ignore", ".dvc/config.local"], repo, env, check=False)
    assert ignored.returncode == 0, "config.local with credentials must be git-ignored"


def test_push_clone_pull_is_byte_identical_and_old_versions_come_back(tmp_path, s3, env):
    repo = make_project(tmp_path, s3, "roundtrip", env)
    v1 = commit_dataset(repo, env, seed=1, message="dataset v1")
    run([DVC, "push"], repo, env)
    v1_files = snapshot(repo / "data" / "dataset")
    v2 = commit_dataset(repo, env, seed=2, message="dataset v2", count=30)
    run([DVC, "push"], repo, env)
    v2_files = snapshot(repo / "data" / "dataset")
    assert v1_files != v2_files

    # A teammate: fresh clone (remote config comes with .dvc/config; credentials from the env)
    mate = clone(repo, tmp_path / "mate", env)
    assert not (mate / "data" / "dataset").exists()
    run([DVC, "pull"], mate, env)
    assert snapshot(mate / "data" / "dataset") == v2_files

    # Older commit -> that commit's dataset (the clone only pulled v2, so v1 comes from the remote)
    run(["git", "checkout", "-q", v1], mate, env)
    run([DVC, "pull"], mate, env)
    assert snapshot(mate / "data" / "dataset") == v1_files
    run(["git", "checkout", "-q", v2], mate, env)
    run([DVC, "pull"], mate, env)
    assert snapshot(mate / "data" / "dataset") == v2_files


def _assert_fails_fast(cmd: list[str], cwd: Path, env: dict, bound_s: float, *needles: str) -> str:
    start = time.monotonic()
    result = run(cmd, cwd, env, timeout=bound_s + 60, check=False)
    elapsed = time.monotonic() - start
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert elapsed < bound_s, f"{' '.join(cmd)} took {elapsed:.1f} s against a dead remote"
    for needle in needles:
        assert needle in output, f"{needle!r} not in:\n{output}"
    return output


@pytest.mark.parametrize("outage", ["killed", pytest.param("hung", marks=pytest.mark.slow)])
def test_dead_remote_fails_within_bound_with_clear_message(tmp_path, env, outage):
    server = MotoServer(tmp_path / "moto.log").start()
    try:
        repo = make_project(tmp_path, server, "outage", env)
        commit_dataset(repo, env, seed=3, message="dataset")
        run([DVC, "push"], repo, env)
        mate = clone(repo, tmp_path / "mate", env)
        commit_dataset(repo, env, seed=4, message="dataset v2")  # something new to push
        if outage == "killed":
            server.stop()
            reason = "cannot connect to the endpoint"
        else:
            server.pause()  # accepts TCP connections, never answers
            reason = "did not answer"
        bounded = dict(env, AWS_MAX_ATTEMPTS="1")  # what `python -m factory_sam3.remote` sets (2) or the user
        # plain dvc: fails within the bound, naming the endpoint
        _assert_fails_fast([DVC, "push"], repo, bounded, OUTAGE_BOUND_S[outage], "ERROR", server.endpoint)
        _assert_fails_fast([DVC, "pull"], mate, bounded, OUTAGE_BOUND_S[outage], "ERROR", server.endpoint)
        # our wrapper: checks first, names the remote, one line, fast
        for verb, cwd in (("push", repo), ("pull", mate)):
            out = _assert_fails_fast(
                [PY, "-m", "factory_sam3.remote", verb], cwd, env, 30, "remote 'storage'", server.endpoint, reason
            )
            assert "Traceback" not in out
    finally:
        server.stop()


def test_interrupted_push_resumes_and_clone_pull_is_complete(tmp_path, s3, env):
    import boto3

    repo = make_project(tmp_path, s3, "interrupt", env)
    commit_dataset(repo, env, seed=5, message="bigger dataset", count=300, size=16384)
    total_objects = 302  # 300 frames + annotations.json + the .dir listing
    bucket = boto3.resource(
        "s3",
        endpoint_url=s3.endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).Bucket("interrupt")

    push = subprocess.Popen(
        [DVC, "push", "-j", "1"],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    uploaded = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and push.poll() is None:
        uploaded = sum(1 for _ in bucket.objects.all())
        if uploaded >= 20:
            break
        time.sleep(0.2)
    assert push.poll() is None, "push finished before it could be interrupted; make the dataset bigger"
    os.killpg(push.pid, signal.SIGKILL)
    push.wait(timeout=30)
    partial = sum(1 for _ in bucket.objects.all())
    assert 0 < partial < total_objects, f"{partial} objects after the kill"

    run([DVC, "push"], repo, env)  # retry completes what is missing
    assert sum(1 for _ in bucket.objects.all()) == total_objects

    mate = clone(repo, tmp_path / "mate", env)
    run([DVC, "pull"], mate, env)
    assert snapshot(mate / "data" / "dataset") == snapshot(repo / "data" / "dataset")
    status = run([DVC, "status", "--cloud"], mate, env)
    assert "in sync" in status.stdout.lower() or "up to date" in status.stdout.lower(), status.stdout
