"""DVC remote layout: many small frame JPEGs vs one archive vs videos, pushed to and pulled from S3.

Side by side in one run against the same loopback S3 endpoint (moto_server process):

  frames   a folder of N small JPEGs, `dvc add data/frames` (one S3 object per frame)
  archive  the same frames in one uncompressed tar (JPEGs do not compress), `dvc add data/frames.tar`;
           the teammate's time includes unpacking it
  videos   the same frames as MP4 videos (what `fetch` versions as data/raw); the teammate's time
           includes decoding them back to JPEG frames, like extract_frames does

For each: `dvc push` from the author's repo, then a fresh `git clone` + `dvc pull` (+ unpack/decode).

    .venv/bin/python benchmarks/bench_remote_layout.py --frames 5000
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(0, str(REPO_ROOT))

from helpers_s3 import VENV_BIN, MotoServer, init_repo, run, s3_env  # noqa: E402

DVC = str(VENV_BIN / "dvc")
WIDTH, HEIGHT, FRAMES_PER_VIDEO, FPS = 256, 192, 100, 10


def frame_image(index: int):
    """A distinct, JPEG-friendly frame (a moving gradient scene), so every file is unique."""
    import numpy as np

    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    video, t = divmod(index, FRAMES_PER_VIDEO)
    r = (x + 3 * t + 17 * video) % 256
    g = (y * 2 + video * 29) % 256
    b = ((x - 40 - 2 * t) ** 2 + (y - 96) ** 2 < 900) * 255
    return np.dstack([b, g, r]).astype("uint8")


def write_frames(folder: Path, count: int) -> int:
    import cv2

    folder.mkdir(parents=True)
    total = 0
    for index in range(count):
        video, t = divmod(index, FRAMES_PER_VIDEO)
        path = folder / f"video_{video:03d}" / f"{t:05d}.jpg"
        path.parent.mkdir(exist_ok=True)
        ok, data = cv2.imencode(".jpg", frame_image(index), [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok
        path.write_bytes(data.tobytes())
        total += len(data)
    return total


def write_videos(folder: Path, count: int) -> None:
    import cv2

    folder.mkdir(parents=True)
    videos = (count + FRAMES_PER_VIDEO - 1) // FRAMES_PER_VIDEO
    for video in range(videos):
        writer = cv2.VideoWriter(
            str(folder / f"video_{video:03d}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT)
        )
        for t in range(min(FRAMES_PER_VIDEO, count - video * FRAMES_PER_VIDEO)):
            writer.write(frame_image(video * FRAMES_PER_VIDEO + t))
        writer.release()


def decode_videos(folder: Path, out: Path) -> int:
    import cv2

    written = 0
    for video in sorted(folder.glob("*.mp4")):
        capture = cv2.VideoCapture(str(video))
        target = out / video.stem
        target.mkdir(parents=True, exist_ok=True)
        t = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            cv2.imwrite(str(target / f"{t:05d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
            t += 1
            written += 1
        capture.release()
    return written


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    run(cmd, cwd, env, timeout=3600)
    return time.perf_counter() - start


def bench_layout(name: str, work: Path, server: MotoServer, env: dict, frames_src: Path, count: int) -> dict:
    repo = work / name / "author"
    init_repo(repo, env)
    server.create_bucket(f"bench-{name}")
    run([DVC, "remote", "add", "-d", "storage", f"s3://bench-{name}/cache"], repo, env)
    run([DVC, "remote", "modify", "storage", "endpointurl", server.endpoint], repo, env)
    data = repo / "data"
    data.mkdir()
    if name == "frames":
        shutil.copytree(frames_src, data / "frames")
        target = "data/frames"
    elif name == "archive":
        with tarfile.open(data / "frames.tar", "w") as tar:
            tar.add(frames_src, arcname="frames")
        target = "data/frames.tar"
    else:
        write_videos(data / "videos", count)
        target = "data/videos"
    size = sum(p.stat().st_size for p in (data).rglob("*") if p.is_file())
    objects = sum(1 for p in data.rglob("*") if p.is_file())
    add_s = timed([DVC, "add", "-q", target], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", name], repo, env)
    push_s = timed([DVC, "push"], repo, env)

    mate = work / name / "mate"
    run(["git", "clone", "-q", str(repo), str(mate)], work, env)
    pull_s = timed([DVC, "pull"], mate, env)
    start = time.perf_counter()
    if name == "archive":
        with tarfile.open(mate / "data" / "frames.tar") as tar:
            tar.extractall(mate / "data", filter="data")
        restored = sum(1 for _ in (mate / "data" / "frames").rglob("*.jpg"))
    elif name == "videos":
        restored = decode_videos(mate / "data" / "videos", mate / "data" / "frames")
    else:
        restored = sum(1 for _ in (mate / "data" / "frames").rglob("*.jpg"))
    post_s = time.perf_counter() - start
    assert restored == count, f"{name}: {restored} frames after pull, expected {count}"
    return {
        "layout": name,
        "files": objects,
        "mbytes": round(size / 1e6, 1),
        "dvc_add_s": round(add_s, 1),
        "push_s": round(push_s, 1),
        "pull_s": round(pull_s, 1),
        "unpack_s": round(post_s, 1),
        "teammate_total_s": round(pull_s + post_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=5000)
    parser.add_argument("--layouts", default="frames,archive,videos")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    env = s3_env()
    with tempfile.TemporaryDirectory(prefix="bench-remote-") as tmp:
        work = Path(tmp)
        server = MotoServer(work / "moto.log").start()
        try:
            frames_src = work / "frames_src"
            jpeg_bytes = write_frames(frames_src, args.frames)
            print(f"{args.frames} frames, {jpeg_bytes / 1e6:.1f} MB of JPEG, S3 at {server.endpoint}", file=sys.stderr)
            results = [
                bench_layout(name, work, server, env, frames_src, args.frames) for name in args.layouts.split(",")
            ]
        finally:
            server.stop()
    base = next((r for r in results if r["layout"] == "frames"), None)
    header = ("layout", "files", "mbytes", "dvc_add_s", "push_s", "pull_s", "unpack_s", "teammate_total_s")
    print("| " + " | ".join(header) + " | vs frames (teammate) |")
    print("|" + "---|" * (len(header) + 1))
    for r in results:
        ratio = f"{base['teammate_total_s'] / r['teammate_total_s']:.1f}x faster" if base and r is not base else "1.0x"
        print("| " + " | ".join(str(r[h]) for h in header) + f" | {ratio} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
