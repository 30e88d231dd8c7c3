"""Baseline for benchmarks/bench_extract_frames.py: the guide's Script 2 (``extract_video_frames.py``),
reimplemented with the same behaviour.

What makes it the guide's: one video after another in ``iterdir()`` order; ``cv2.VideoCapture`` with its
defaults; ``read()`` (decode + colour conversion) of EVERY frame, skipped ones included; ``cv2.imwrite``
with OpenCV's default JPEG quality (95); stop once ``max_frames`` are saved; a print per video; frames
named ``00000.jpg ...`` in ``<output_dir>/<video stem>/``. No manifest, no error on unreadable videos.
"""

from __future__ import annotations

from pathlib import Path

import cv2

VIDEO_SUFFIXES = [".mp4", ".avi", ".mov", ".mkv"]


def extract_frames(video_path: str, output_dir: str, frame_interval: int = 1, max_frames: int | None = None) -> int:
    target = Path(output_dir) / Path(video_path).stem
    target.mkdir(parents=True, exist_ok=True)
    capture = cv2.VideoCapture(video_path)
    position = 0
    written = 0
    while True:
        ok, image = capture.read()
        if not ok:
            break
        if position % frame_interval == 0:
            cv2.imwrite(str(target / f"{written:05d}.jpg"), image)
            written += 1
            if max_frames and written >= max_frames:
                break
        position += 1
    capture.release()
    print(f"Extracted {written} frames from {video_path} to {target}")
    return written


def process_video_folder(
    video_folder: str, output_dir: str, frame_interval: int = 1, max_frames_per_video: int = 100
) -> int:
    total = 0
    for path in Path(video_folder).iterdir():
        if path.suffix.lower() in VIDEO_SUFFIXES:
            total += extract_frames(str(path), output_dir, frame_interval, max_frames_per_video)
    return total
