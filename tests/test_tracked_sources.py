"""The user's own data as a tracked DVC input: `dvc import-url` of an S3 prefix (real moto_server on
loopback) into data/sources/, which the fetch stage depends on. A new video there is picked up by
`dvc update`, shown by `dvc status`, rerun by `dvc repro` (fetch and what follows) and pinned: a fresh
clone pulls the exact version even after the source moved on."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from helpers_params import section_with
from helpers_s3 import VENV_BIN, MotoServer, init_repo, project_env, run

pytestmark = pytest.mark.integration  # a loopback S3 endpoint and dvc import-url/update/repro

REPO = Path(__file__).resolve().parents[1]
DVC = str(VENV_BIN / "dvc")
TINY_SYNTHETIC = {
    "num_videos": 2,
    "frames_per_video": 8,
    "fps": 10,
    "width": 128,
    "height": 96,
    "num_images": 2,
    "negative_fraction": 0.15,
    "sparse_videos": 0,
    "keyframe_interval": 4,
}
# a stage after fetch: counts the videos fetch copied into data/raw
COUNT = (
    "python -c \"import json, pathlib; json.dump({'videos': len(list(pathlib.Path('data/raw/videos')"
    ".glob('*.mp4')))}, open('count.json', 'w'))\""
)


def s3_client(endpoint: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def raw_two_videos(tmp_path_factory) -> Path:
    """A small dataset in the raw layout (the synthetic generator's output, source.json removed)."""
    work = tmp_path_factory.mktemp("raw")
    (work / "params.yaml").write_text(
        yaml.safe_dump({"fetch": section_with("fetch", source="synthetic", seed=5, synthetic=TINY_SYNTHETIC)})
    )
    run([sys.executable, str(REPO / "stages" / "fetch.py")], work, project_env(), timeout=120)
    (work / "data" / "raw" / "source.json").unlink()
    return work / "data" / "raw"


def upload(s3, raw: Path, prefix: str, only_video: str | None = None) -> None:
    for path in sorted(p for p in raw.rglob("*") if p.is_file()):
        rel = path.relative_to(raw).as_posix()
        is_video_file = rel.startswith(("videos/", "video_annotations/"))
        if only_video is not None and not (is_video_file and Path(rel).stem == only_video):
            continue
        if only_video is None and is_video_file and Path(rel).stem != "cell_00":
            continue  # the first upload holds one video; the second is "added by the plant team" later
        s3.upload_file(str(path), "plant", f"{prefix}/{rel}")


def test_the_fetch_stage_depends_on_data_sources():
    fetch = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["fetch"]
    assert "data/sources" in fetch["deps"]
    assert (REPO / "data" / "sources" / "README.md").is_file(), "the folder must exist in a fresh clone"


def test_unversioned_path_warns_tracked_path_does_not(tmp_path, monkeypatch):
    from factory_sam3.sources.stage import unversioned_warning

    monkeypatch.chdir(tmp_path)
    assert unversioned_warning(None) is None
    (tmp_path / "data" / "sources" / "cell3").mkdir(parents=True)
    (tmp_path / "data" / "sources" / "cell3.zip").write_bytes(b"")
    assert unversioned_warning("data/sources/cell3") is None
    assert unversioned_warning(str(tmp_path / "data" / "sources" / "cell3.zip")) is None
    (tmp_path / "plant" / "cell3").mkdir(parents=True)
    local = unversioned_warning("plant/cell3")
    assert "not versioned" in local and f"dvc import-url {tmp_path / 'plant' / 'cell3'} data/sources/cell3" in local
    assert unversioned_warning("workspace/project/3") is None, "a Roboflow id is not a folder"
    remote = unversioned_warning("s3://plant/cell3/")
    assert "dvc import-url s3://plant/cell3/ data/sources/cell3" in remote and "endpointurl" in remote


def test_s3_source_change_is_picked_up_rerun_and_pinned(tmp_path, moto, raw_two_videos):
    s3 = s3_client(moto.endpoint)
    moto.create_bucket("plant")
    upload(s3, raw_two_videos, "cell3")
    env = project_env(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    project = tmp_path / "project"
    init_repo(project, env)
    (project / "data" / "sources").mkdir(parents=True)
    shutil.copy(REPO / "data" / "sources" / "README.md", project / "data" / "sources" / "README.md")
    fetch = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["fetch"]
    stages = {
        "fetch": {
            "cmd": f"python {REPO / 'stages' / 'fetch.py'}",
            "deps": [d for d in fetch["deps"] if d.startswith("data/")],
            "params": ["fetch"],
            "outs": ["data/raw"],
        },
        "count": {"cmd": COUNT, "deps": ["data/raw"], "metrics": [{"count.json": {"cache": False}}]},
    }
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    (project / "params.yaml").write_text(
        yaml.safe_dump({"fetch": section_with("fetch", source="folder", path="data/sources/cell3")})
    )
    run([DVC, "remote", "add", "-d", "store", str(tmp_path / "dvc-remote")], project, env)

    run(
        [DVC, "import-url", "s3://plant/cell3/", "data/sources/cell3", "--fs-config", f"endpointurl={moto.endpoint}"],
        project,
        env,
    )
    first = run([DVC, "repro"], project, env)
    assert "warning: fetch" not in first.stderr, "a tracked source must not warn"
    assert json.loads((project / "count.json").read_text()) == {"videos": 1}
    run(["git", "add", "-A"], project, env)
    run(["git", "commit", "-qm", "one video"], project, env)
    lock_before = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["fetch"]["deps"]

    upload(s3, raw_two_videos, "cell3", only_video="cell_01")  # the plant team adds a video
    run([DVC, "update", "data/sources/cell3.dvc"], project, env)
    status = run([DVC, "status"], project, env).stdout
    assert "fetch:" in status and "modified:" in status and "data/sources" in status, status
    second = run([DVC, "repro"], project, env)
    assert "Running stage 'fetch'" in second.stdout and "Running stage 'count'" in second.stdout, second.stdout
    assert json.loads((project / "count.json").read_text()) == {"videos": 2}
    lock_after = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["fetch"]["deps"]
    assert lock_after != lock_before, "dvc.lock must pin the new source version"
    assert "Data and pipelines are up to date" in run([DVC, "status"], project, env).stdout
    run([DVC, "push"], project, env)
    run(["git", "add", "-A"], project, env)
    run(["git", "commit", "-qm", "two videos"], project, env)

    # the source moves on (the video is deleted there); a fresh clone still gets the pinned version
    s3.delete_object(Bucket="plant", Key="cell3/videos/cell_01.mp4")
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path, env)
    run([DVC, "pull"], clone, env)
    assert sorted(p.name for p in (clone / "data" / "sources" / "cell3" / "videos").iterdir()) == [
        "cell_00.mp4",
        "cell_01.mp4",
    ]
    assert (clone / "data" / "raw" / "videos" / "cell_01.mp4").read_bytes() == (
        raw_two_videos / "videos" / "cell_01.mp4"
    ).read_bytes()
    assert "Data and pipelines are up to date" in run([DVC, "status"], clone, env).stdout
