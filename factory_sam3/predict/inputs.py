"""What ``predict`` reads: an image, a folder of images, a video file (anything OpenCV decodes) or a folder
of frames, streamed one frame at a time (RGB uint8) so a long video never sits in memory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from factory_sam3.errors import UserError

# FFmpeg's console chatter about a broken stream would bury the one-line error
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_FPS = 10.0  # frame folders carry no frame rate


@dataclass
class Source:
    path: Path
    kind: str  # "images" or "video"
    files: list[Path]  # the images, or the frames of a frame folder (empty for a video file)
    num_frames: int | None  # None: a container that does not say
    fps: float
    width: int
    height: int

    @property
    def name(self) -> str:
        return self.path.stem if self.path.is_file() else self.path.name


def read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read the image ({err})", path) from None


def open_source(path: str | os.PathLike, kind: str = "auto") -> Source:
    """Classify the input. A folder whose image names are all numbers (``00000.jpg``, as ``extract_frames``
    writes) is a video's frames, any other folder a set of images; ``kind`` ("images"/"video") overrides."""
    path = Path(path)
    if not path.exists():
        raise UserError("input not found", path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise UserError(f"the folder holds no images ({', '.join(IMAGE_EXTENSIONS)})", path)
        if kind == "auto":
            kind = "video" if all(p.stem.isdigit() for p in files) else "images"
        if kind == "video":
            files.sort(key=lambda p: (int(p.stem), p.name) if p.stem.isdigit() else (float("inf"), p.name))
        height, width = read_image(files[0]).shape[:2]
        return Source(path, kind, files, len(files), DEFAULT_FPS, width, height)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        if kind == "video":
            raise UserError("a single image is not a video", path)
        height, width = read_image(path).shape[:2]
        return Source(path, "images", [path], 1, DEFAULT_FPS, width, height)
    if kind == "images":
        raise UserError("not an image file (a video? leave --as at auto)", path)
    cap = _open_video(path)
    try:
        ok, frame = cap.read()
        if not ok or frame is None:
            raise UserError("no frame can be decoded (unreadable, truncated or empty video)", path)
        claimed = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        cap.release()
    return Source(
        path, "video", [], claimed or None, fps if 0 < fps < 1000 else DEFAULT_FPS, frame.shape[1], frame.shape[0]
    )


def _open_video(path: Path):
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise UserError("cannot open the video (unreadable, truncated or not a video)", path)
    return cap


def frames(source: Source) -> Iterator[np.ndarray]:
    """The frames of a video source in order, one at a time (RGB uint8 HxWx3). A frame of another size,
    an unreadable frame file or a video that decodes fewer frames than its container claims is an error."""
    if source.kind != "video":
        raise ValueError("frames() reads videos; images are read one by one")
    if source.files:
        for path in source.files:
            frame = read_image(path)
            if frame.shape[:2] != (source.height, source.width):
                raise UserError(
                    f"frame size {frame.shape[1]}x{frame.shape[0]} differs from the first frame's "
                    f"{source.width}x{source.height}",
                    path,
                )
            yield frame
        return
    cap = _open_video(source.path)
    index = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            index += 1
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()
    claimed = source.num_frames or 0
    tolerance = max(1, claimed // 50)  # containers without an index estimate their length (as extract_frames)
    if claimed and index < claimed - tolerance:
        raise UserError(
            f"truncated: the container claims {claimed} frames but only {index} can be decoded", source.path
        )
