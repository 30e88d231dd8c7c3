"""The extract_frames stage: exact frames, manifest, parallel == sequential, bad videos, frame folders."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from factory_sam3.data.frames import Settings, extract_all

REPO = Path(__file__).resolve().parents[1]
EXTRACT = REPO / "stages" / "extract_frames.py"
DEFAULTS = {
    "frame_interval": 2,
    "max_frames_per_video": 100,
    "jpeg_quality": 95,
    "workers": 0,
    "skip_bad_videos": False,
}


def write_video(path: Path, frames: int, fps: float = 10.0, size=(96, 64), fourcc: str = "mp4v") -> None:
    """Every frame different (a bar whose position is the frame number) so a wrong index shows."""
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened()
    rng = np.random.default_rng(len(path.name))
    base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    for i in range(frames):
        frame = base.copy()
        frame[:, (i * 3) % width : (i * 3) % width + 3] = (0, 0, 255)
        frame[: height // 4] = (i * 7) % 256
        writer.write(frame)
    writer.release()


def run_extract(workdir: Path, **params):
    (workdir / "params.yaml").write_text(yaml.safe_dump({"extract_frames": {**DEFAULTS, **params}}))
    return subprocess.run(
        [sys.executable, str(EXTRACT), "--params", "params.yaml", "--no-progress"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )


def hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def read_all(path: Path) -> list[np.ndarray]:
    """The guide's way: read() every frame."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            return frames
        frames.append(frame)


@pytest.fixture
def raw(tmp_path) -> Path:
    videos = tmp_path / "data" / "raw" / "videos"
    videos.mkdir(parents=True)
    write_video(videos / "line_a.mp4", 23)
    write_video(videos / "line_b.mp4", 40, fps=25.0)
    write_video(videos / "line_c.avi", 9, fourcc="MJPG")
    return tmp_path / "data" / "raw"


def test_frames_are_the_right_source_frames_with_manifest(raw, tmp_path):
    result = run_extract(tmp_path, frame_interval=3, max_frames_per_video=10, jpeg_quality=90)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "data" / "frames"
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["videos"]) == ["line_a", "line_b", "line_c"]
    for name, expected_count in (("line_a", 8), ("line_b", 10), ("line_c", 3)):
        record = manifest["videos"][name]
        source = raw / record["source"]
        assert record["status"] == "ok" and record["error"] is None
        files = sorted(p.name for p in (out / name).iterdir())
        assert files == [f"{i:05d}.jpg" for i in range(expected_count)]
        assert [f["file"] for f in record["frames"]] == files
        assert [f["source_index"] for f in record["frames"]] == [3 * i for i in range(expected_count)]
        fps = record["fps"]
        for entry in record["frames"]:
            assert entry["timestamp"] == pytest.approx(entry["source_index"] / fps, abs=1e-3)
        # byte for byte what read() of that source frame encodes to at the same quality
        reference = read_all(source)
        for entry in record["frames"]:
            ok, buf = cv2.imencode(".jpg", reference[entry["source_index"]], [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert (out / name / entry["file"]).read_bytes() == buf.tobytes(), (name, entry)
    assert "21 frames from 3 videos" in result.stderr


def test_parallel_equals_sequential_and_quality_matters(raw, tmp_path):
    settings = Settings(frame_interval=2, max_frames_per_video=None, jpeg_quality=95)
    one = extract_all(raw, tmp_path / "one", settings, workers=1, progress=False)
    two = extract_all(raw, tmp_path / "two", settings, workers=2, progress=False)
    assert one == two
    assert hashes(tmp_path / "one") == hashes(tmp_path / "two")
    assert len(one["videos"]["line_b"]["frames"]) == 20  # no limit: every 2nd of 40
    low = extract_all(raw, tmp_path / "low", Settings(2, None, 40), workers=2, progress=False)
    assert [f["source_index"] for f in low["videos"]["line_b"]["frames"]] == list(range(0, 40, 2))
    size = lambda root: sum(p.stat().st_size for p in root.rglob("*.jpg"))  # noqa: E731
    assert size(tmp_path / "low") < 0.7 * size(tmp_path / "one")


def test_frame_folders_are_subsampled_and_renumbered(tmp_path):
    folder = tmp_path / "data" / "raw" / "frame_folders" / "vid1"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(0, 35, 5):  # YouTube-VOS style names: 00000, 00005, ...
        image = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"{k:05d}.{'png' if k == 10 else 'jpg'}"), image)
    result = run_extract(tmp_path, frame_interval=2, max_frames_per_video=3)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "data" / "frames"
    record = json.loads((out / "manifest.json").read_text())["videos"]["vid1"]
    assert record["source"] == "frame_folders/vid1" and record["status"] == "ok"
    assert [(f["file"], f["source_index"], f["source_file"]) for f in record["frames"]] == [
        ("00000.jpg", 0, "00000.jpg"),
        ("00001.jpg", 2, "00010.png"),
        ("00002.jpg", 4, "00020.jpg"),
    ]
    assert (out / "vid1" / "00000.jpg").read_bytes() == (folder / "00000.jpg").read_bytes()
    assert cv2.imread(str(out / "vid1" / "00001.jpg")).shape == (30, 40, 3)  # the PNG became a JPEG
    assert (record["width"], record["height"]) == (40, 30)


def _bad_videos(raw: Path) -> dict[str, Path]:
    junk = raw / "videos" / "junk.mp4"
    junk.write_bytes(b"this is not a video at all" * 10)
    good = raw / "videos" / "line_a.mp4"
    cut = raw / "videos" / "cut.mp4"  # a recording that stopped: the mp4 index at the end is gone
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    write_video(raw / "videos" / "short.avi", 30, fourcc="MJPG")
    data = (raw / "videos" / "short.avi").read_bytes()
    (raw / "videos" / "short.avi").write_bytes(data[: len(data) // 2])  # claims 30 frames, ~half decode
    return {"junk": junk, "cut": cut, "short": raw / "videos" / "short.avi"}


@pytest.mark.parametrize("bad", ["junk", "cut", "short"])
def test_bad_video_is_a_clear_error_and_leaves_nothing(raw, tmp_path, bad):
    paths = _bad_videos(raw)
    for name, path in paths.items():
        if name != bad:
            path.unlink()
    stale = tmp_path / "data" / "frames" / "old"
    stale.mkdir(parents=True)  # a previous run's output must not survive a failed run
    result = run_extract(tmp_path, max_frames_per_video=100)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"error: {paths[bad].relative_to(tmp_path)}: " in result.stderr
    assert "skip_bad_videos" in result.stderr
    if bad == "short":
        assert "truncated: the container claims 30 frames" in result.stderr
    assert not (tmp_path / "data" / "frames").exists()
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["raw"]  # no temporary folder left either


def test_skip_bad_videos_warns_and_records(raw, tmp_path):
    paths = _bad_videos(raw)
    result = run_extract(tmp_path, skip_bad_videos=True)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "data" / "frames"
    manifest = json.loads((out / "manifest.json").read_text())["videos"]
    for name, path in paths.items():
        assert f"warning: {path.relative_to(tmp_path)}: " in result.stderr
        assert manifest[name]["status"] == "skipped" and manifest[name]["error"], manifest[name]
        assert manifest[name]["frames"] == [] and not (out / name).exists()
    assert "truncated" in manifest["short"]["error"]
    assert all(manifest[n]["status"] == "ok" and (out / n / "00000.jpg").is_file() for n in ("line_a", "line_b"))
    assert "(3 skipped)" in result.stderr


def test_bad_params_and_missing_input(tmp_path):
    result = run_extract(tmp_path)
    assert result.returncode == 2 and "run the fetch stage first" in result.stderr
    (tmp_path / "data" / "raw").mkdir(parents=True)
    result = run_extract(tmp_path, frame_interval=0)
    assert result.returncode == 2 and "'extract_frames.frame_interval'" in result.stderr
    result = run_extract(tmp_path, workers=-1)
    assert result.returncode == 2 and "'extract_frames.workers'" in result.stderr


def test_image_only_source_gives_an_empty_manifest(tmp_path):
    (tmp_path / "data" / "raw" / "images").mkdir(parents=True)
    result = run_extract(tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "data" / "frames" / "manifest.json").read_text())["videos"] == {}


def test_help_works():
    result = subprocess.run([sys.executable, str(EXTRACT), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "frame_interval" in result.stdout
