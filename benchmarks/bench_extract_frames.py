#!/usr/bin/env python3
"""extract_frames (ours) vs the guide's Script 2, on the same generated videos, side by side in one run.

Generates the videos once (the synthetic work cell at camera-like resolution, mp4v), then alternates
baseline and ours for several repeats and reports the median frames/s of each and their ratio. Both keep
every ``--interval``-th frame up to ``--max-frames`` per video at JPEG quality 95 (the guide's default).

    .venv/bin/python benchmarks/bench_extract_frames.py            # defaults below
    .venv/bin/python benchmarks/bench_extract_frames.py --repeats 9 --videos 8 --frames 150

On a machine shared with other sessions (Linux autogroup scheduling) see benchmarks/RESULTS.md for how the
numbers there were taken.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from baselines.guide_extract_video_frames import process_video_folder  # noqa: E402

from factory_sam3.data.frames import Settings, default_workers, extract_all  # noqa: E402
from factory_sam3.sources.synthetic import DEFAULTS, render_video  # noqa: E402


def make_videos(folder: Path, count: int, frames: int, width: int, height: int) -> None:
    marker = folder / f".made-{count}-{frames}-{width}x{height}"
    if marker.exists():
        return
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "videos").mkdir(parents=True)
    cfg = {
        **DEFAULTS,
        "num_videos": count,
        "frames_per_video": frames,
        "width": width,
        "height": height,
        "sparse_videos": 0,
        "keyframe_interval": 1,
    }
    for index in range(count):
        render_video(cfg, 0, index, folder / "videos" / f"cam_{index:02d}.mp4")
    marker.touch()


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (our workers), user + system."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def count_jpegs(root: Path) -> int:
    return sum(1 for _ in root.rglob("*.jpg"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=150, help="frames per video")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--interval", type=int, default=2, help="keep every N-th frame (params.yaml default)")
    parser.add_argument("--max-frames", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=0, help="ours: 0 = one process per core")
    parser.add_argument("--work", default=str(REPO / "benchmarks" / "out" / "extract_frames"))
    args = parser.parse_args()

    work = Path(args.work)
    raw = work / "raw"
    started = time.perf_counter()
    make_videos(raw, args.videos, args.frames, args.width, args.height)
    print(
        f"videos: {args.videos} x {args.frames} frames at {args.width}x{args.height} (mp4v), "
        f"ready in {time.perf_counter() - started:.1f} s; keep every {args.interval}th, max {args.max_frames}; "
        f"cores available: {default_workers()}"
    )

    settings = Settings(frame_interval=args.interval, max_frames_per_video=args.max_frames, jpeg_quality=95)

    def baseline() -> Path:
        out = work / "baseline"
        shutil.rmtree(out, ignore_errors=True)
        with contextlib.redirect_stdout(io.StringIO()):  # its per-video prints
            process_video_folder(str(raw / "videos"), str(out), args.interval, args.max_frames)
        return out

    def ours() -> Path:
        out = work / "ours"
        shutil.rmtree(out, ignore_errors=True)
        extract_all(raw, out, settings, workers=args.workers, progress=False)
        return out

    times: dict[str, list[float]] = {"guide Script 2": [], "ours": []}
    cpu: dict[str, list[float]] = {"guide Script 2": [], "ours": []}
    frames: dict[str, int] = {}
    # warm-up (page cache, lazy library init), then check both wrote the very same files, byte for byte
    base_out, our_out = baseline(), ours()
    base_files = sorted(p.relative_to(base_out) for p in base_out.rglob("*.jpg"))
    our_files = sorted(p.relative_to(our_out) for p in our_out.rglob("*.jpg"))
    if base_files != our_files or any((base_out / f).read_bytes() != (our_out / f).read_bytes() for f in base_files):
        raise SystemExit("ours and the baseline wrote different frames")
    print(f"check: both write the same {len(base_files)} JPEG files, byte for byte")

    for repeat in range(args.repeats):
        order = [("guide Script 2", baseline), ("ours", ours)]
        if repeat % 2:
            order.reverse()
        for name, run in order:
            t0, c0 = time.perf_counter(), cpu_seconds()
            out = run()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(cpu_seconds() - c0)
            frames[name] = count_jpegs(out)
    if frames["ours"] != frames["guide Script 2"]:
        raise SystemExit(f"frame counts differ: {frames}")

    print(f"{'':16s} {'median s':>9s} {'frames/s':>9s} {'CPU s':>7s}   runs (s)")
    rates = {}
    for name, values in times.items():
        median = statistics.median(values)
        rates[name] = frames[name] / median
        print(
            f"{name:16s} {median:9.3f} {rates[name]:9.1f} {statistics.median(cpu[name]):7.2f}   "
            + " ".join(f"{v:.2f}" for v in values)
        )
    print(
        f"ratio ours / guide Script 2: {rates['ours'] / rates['guide Script 2']:.2f}x "
        f"({frames['ours']} frames each, {args.repeats} alternating repeats, load avg {os.getloadavg()[0]:.1f})"
    )


if __name__ == "__main__":
    main()
