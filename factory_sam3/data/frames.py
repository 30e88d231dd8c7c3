"""Videos -> numbered JPEG frames (the ``extract_frames`` stage).

For every ``data/raw/videos/<video>.<ext>`` and ``data/raw/frame_folders/<video>/``: keep every
``frame_interval``-th frame, at most ``max_frames_per_video``, renumbered ``00000.jpg, 00001.jpg, ...``, and
record each kept frame's source index and timestamp in ``manifest.json`` (decoders can disagree on frame
boundaries; the manifest makes the mapping auditable and lets later stages map annotations to files).

Faster than the guide's Script 2 because each video is decoded once with ``grab()`` (the skipped frames are
never converted to BGR), decoding stops as soon as enough frames are kept, videos run in parallel (a process
per core, one decoder thread each, so processes don't fight over cores), JPEG encoding overlaps decoding
(a second thread per video) and JPEG quality is explicit. The JPEG files are byte-identical to the guide's.

A video that cannot be opened, decodes no frame, or decodes fewer frames than its container claims
(truncated) is an error naming the file; with ``skip_bad_videos`` it is a warning and a ``"skipped"``
record in the manifest instead, never a silent empty folder.

Settings: params.yaml section ``extract_frames``: frame_interval (keep every N-th frame), max_frames_per_video,
jpeg_quality, workers (0 = one process per core), skip_bad_videos (warn and record instead of failing).
Paths are relative to the current directory; the output is written to a temporary folder and renamed.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import shutil
import sys
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
from tqdm import tqdm

from factory_sam3 import layout
from factory_sam3.cli import stage_main
from factory_sam3.config import Invalid, ensure
from factory_sam3.data.parallel import cpu_workers
from factory_sam3.errors import UserError
from factory_sam3.io import atomic_dir, write_json

# FFmpeg's and OpenCV's own console chatter about a broken stream would bury our one-line message
# (which names the file and the problem); silence them unless the user asked for it.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

STAGE = "extract_frames"
VIDEO_EXTENSIONS = layout.VIDEO_EXTENSIONS
IMAGE_EXTENSIONS = layout.IMAGE_EXTENSIONS
MANIFEST = layout.FRAMES_MANIFEST
ENCODE_QUEUE = 8  # frames waiting for the encoder thread
FRAME_NAME = "{:05d}.jpg"


class VideoError(Exception):
    """A video (or frame folder) that cannot be turned into frames; the message says why."""


@dataclass(frozen=True)
class Params:
    """params.yaml section ``extract_frames``."""

    frame_interval: int  # keep every N-th frame
    max_frames_per_video: int | None  # null or 0: no limit
    jpeg_quality: int
    workers: int  # 0 = one process per core
    skip_bad_videos: bool  # warn and record a bad video instead of failing

    def check(self) -> None:
        if self.frame_interval < 1:
            raise Invalid("frame_interval", f"must be an integer >= 1, got {self.frame_interval!r}")
        if self.max_frames_per_video is not None and self.max_frames_per_video < 0:
            raise Invalid(
                "max_frames_per_video",
                f"must be an integer >= 1 (0 or null: no limit), got {self.max_frames_per_video!r}",
            )
        if not 1 <= self.jpeg_quality <= 100:
            raise Invalid("jpeg_quality", f"must be an integer between 1 and 100, got {self.jpeg_quality!r}")
        if self.workers < 0:
            raise Invalid("workers", f"must be 0 (one per core) or a positive integer, got {self.workers!r}")


@dataclass(frozen=True)
class Settings:
    """How one video is extracted (from ``Params``, plus the decoder threads extract_all picks)."""

    frame_interval: int
    max_frames_per_video: int | None  # None: no limit
    jpeg_quality: int
    decoder_threads: int = 1  # per video; parallelism comes from one process per video
    encode_thread: bool = True  # encode JPEGs in a second thread while the next frames decode

    @classmethod
    def of(cls, params: Params) -> Settings:
        return cls(params.frame_interval, params.max_frames_per_video or None, params.jpeg_quality)


@dataclass(frozen=True)
class Job:
    name: str
    kind: str  # "video" | "folder"
    source: Path  # absolute or relative to the cwd
    source_label: str  # as recorded in the manifest, relative to data/raw


# ------------------------------------------------------------------------------------------ discovery


def find_jobs(raw: Path) -> list[Job]:
    """Every video and frame folder under ``raw``, sorted by name; duplicate names are an error."""
    jobs: dict[str, Job] = {}
    videos_dir, folders_dir = raw / layout.RAW_VIDEOS, raw / layout.RAW_FRAME_FOLDERS
    if videos_dir.is_dir():
        for path in sorted(videos_dir.iterdir()):
            if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
                _add(jobs, Job(path.stem, "video", path, f"videos/{path.name}"), path)
    if folders_dir.is_dir():
        for path in sorted(folders_dir.iterdir()):
            if path.is_dir():
                _add(jobs, Job(path.name, "folder", path, f"frame_folders/{path.name}"), path)
    return [jobs[name] for name in sorted(jobs)]


def _add(jobs: dict[str, Job], job: Job, path: Path) -> None:
    if job.name in jobs:
        raise UserError(
            f"two sources share the video name '{job.name}' ({jobs[job.name].source_label} and "
            f"{job.source_label}); rename one",
            path,
        )
    jobs[job.name] = job


# ------------------------------------------------------------------------------------------ one video


def _write_jpeg(path: Path, frame, quality: int) -> None:
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise VideoError(f"cannot encode frame as JPEG ({path.name})")
    with open(path, "wb") as handle:
        handle.write(buf.data)


def extract_video(path: Path, out_dir: Path, settings: Settings) -> dict:
    """Decode ``path`` once, writing the kept frames into ``out_dir``; returns the manifest record."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, settings.decoder_threads])
    if not cap.isOpened():
        cap.release()
        cap = cv2.VideoCapture(str(path))  # another backend may still read it
    if not cap.isOpened():
        raise VideoError("cannot open the video (unreadable, truncated or not a video)")
    # JPEG encoding (about half the work) runs in a second thread, overlapping the decoding of the next
    # frames; both release the GIL. A short queue bounds the frames held in memory.
    encoder = ThreadPoolExecutor(max_workers=1) if settings.encode_thread else None
    pending: collections.deque = collections.deque()
    try:
        claimed = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        limit = settings.max_frames_per_video
        interval = settings.frame_interval
        out_dir.mkdir(parents=True, exist_ok=True)
        frames: list[dict] = []
        width = height = None
        index = 0
        # grab() demuxes and decodes; only kept frames pay for retrieve() (colour conversion to BGR)
        while limit is None or len(frames) < limit:
            if not cap.grab():
                break
            if index % interval == 0:
                ok, frame = cap.retrieve()
                if not ok or frame is None:
                    raise VideoError(f"frame {index} cannot be decoded")
                height, width = frame.shape[:2]
                position_ms = cap.get(cv2.CAP_PROP_POS_MSEC)
                if position_ms is None or position_ms < 0 or position_ms != position_ms:
                    position_ms = 1000.0 * index / fps if fps > 0 else None
                name = FRAME_NAME.format(len(frames))
                if encoder is None:
                    _write_jpeg(out_dir / name, frame, settings.jpeg_quality)
                else:
                    pending.append(encoder.submit(_write_jpeg, out_dir / name, frame, settings.jpeg_quality))
                    if len(pending) > ENCODE_QUEUE:
                        pending.popleft().result()
                frames.append(
                    {
                        "file": name,
                        "source_index": index,
                        "timestamp": None if position_ms is None else round(position_ms / 1000.0, 6),
                    }
                )
            index += 1
        while pending:
            pending.popleft().result()
    finally:
        cap.release()
        if encoder is not None:
            encoder.shutdown(wait=True, cancel_futures=True)
    if index == 0:
        raise VideoError("no frame can be decoded (unreadable, truncated or empty video)")
    reached_limit = limit is not None and len(frames) >= limit
    tolerance = max(1, claimed // 50)  # containers without an index estimate their length
    if not reached_limit and claimed > 0 and index < claimed - tolerance:
        raise VideoError(f"truncated: the container claims {claimed} frames but only {index} can be decoded")
    return {
        "status": "ok",
        "error": None,
        "fps": fps or None,
        "frame_count": claimed or None,
        "width": width,
        "height": height,
        "frames": frames,
    }


def _is_complete_jpeg(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(2)
        if head != b"\xff\xd8":
            return False
        handle.seek(-2, os.SEEK_END)
        return handle.read(2) == b"\xff\xd9"


def extract_folder(folder: Path, out_dir: Path, settings: Settings) -> dict:
    """Subsample a folder of frames (sorted by name), renumbered; JPEGs are copied, other formats re-encoded."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise VideoError("the frame folder holds no images (.jpg/.png)")
    out_dir.mkdir(parents=True, exist_ok=True)
    kept = list(range(0, len(files), settings.frame_interval))
    if settings.max_frames_per_video is not None:
        kept = kept[: settings.max_frames_per_video]
    frames = []
    width = height = None
    for number, source_index in enumerate(kept):
        src = files[source_index]
        name = FRAME_NAME.format(number)
        if src.suffix.lower() in (".jpg", ".jpeg") and _is_complete_jpeg(src):
            shutil.copyfile(src, out_dir / name)
            if width is None:
                probe = cv2.imread(str(src), cv2.IMREAD_REDUCED_GRAYSCALE_2)
                if probe is None:
                    raise VideoError(f"frame {src.name} cannot be decoded")
                height, width = (d * 2 for d in probe.shape[:2])
        else:
            image = cv2.imread(str(src), cv2.IMREAD_COLOR)
            if image is None:
                raise VideoError(f"frame {src.name} cannot be decoded (unreadable or truncated image)")
            height, width = image.shape[:2]
            _write_jpeg(out_dir / name, image, settings.jpeg_quality)
        frames.append({"file": name, "source_index": source_index, "source_file": src.name, "timestamp": None})
    return {
        "status": "ok",
        "error": None,
        "fps": None,
        "frame_count": len(files),
        "width": width,
        "height": height,
        "frames": frames,
    }


def run_job(job: Job, out_root: Path, settings: Settings) -> tuple[str, dict]:
    """Worker entry point: never raises for a bad input; returns a ``skipped`` record with the reason."""
    out_dir = out_root / job.name
    try:
        if job.kind == "video":
            record = extract_video(job.source, out_dir, settings)
        else:
            record = extract_folder(job.source, out_dir, settings)
    except (VideoError, cv2.error, OSError) as err:
        shutil.rmtree(out_dir, ignore_errors=True)  # never leave a half-filled folder behind
        record = {
            "status": "skipped",
            "error": str(err),
            "fps": None,
            "frame_count": None,
            "width": None,
            "height": None,
            "frames": [],
        }
    record["source"] = job.source_label
    return job.name, record


# ------------------------------------------------------------------------------------------ all videos


def _pool_context():
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def run(params: Params, raw: Path = layout.RAW, out: Path = layout.FRAMES, progress: bool = True) -> dict:
    """The stage: every video and frame folder under ``raw`` into ``out``; returns a summary."""
    params = ensure(Params, params, STAGE)
    manifest = extract_all(raw, out, Settings.of(params), params.workers, params.skip_bad_videos, progress)
    videos = manifest["videos"].values()
    skipped = sum(v["status"] != "ok" for v in videos)
    return {
        "frames": sum(len(v["frames"]) for v in videos),
        "videos": len(videos) - skipped,
        "skipped": skipped,
        "out": str(out),
    }


def show(summary: dict) -> None:
    skipped = summary["skipped"]
    print(
        f"{STAGE}: {summary['frames']} frames from {summary['videos']} videos -> {summary['out']}"
        + (f" ({skipped} skipped)" if skipped else ""),
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> None:
    stage_main(STAGE, __doc__, Params, run, show, argv, paths={"raw": layout.RAW, "out": layout.FRAMES})


def extract_all(
    raw: Path,
    out: Path,
    settings: Settings,
    workers: int = 0,
    skip_bad_videos: bool = False,
    progress: bool = True,
) -> dict:
    """Extract every video/frame folder under ``raw`` into ``out`` (atomically); returns the manifest."""
    raw, out = Path(raw), Path(out)
    if not raw.is_dir():
        raise UserError("raw data folder not found (run the fetch stage first)", raw)
    jobs = find_jobs(raw)
    cores = cpu_workers()
    workers = cores if not workers else workers
    workers = max(1, min(workers, len(jobs) or 1))
    # fewer videos than cores: let each decoder use the spare cores (frame threading) instead
    settings = replace(settings, decoder_threads=max(1, cores // workers) if len(jobs) < cores else 1)
    records: dict[str, dict] = {}
    with atomic_dir(out) as tmp:
        bar = tqdm(total=len(jobs), desc="extract_frames", unit="video", disable=not progress, file=sys.stderr)

        def accept(name: str, record: dict) -> None:
            bar.update(1)
            if record["status"] != "ok":
                source = raw / record["source"]
                if not skip_bad_videos:
                    raise UserError(f"{record['error']} (set extract_frames.skip_bad_videos: true to skip it)", source)
                tqdm.write(
                    f"warning: {source}: {record['error']}; skipped (recorded in {out / MANIFEST})", file=sys.stderr
                )
            records[name] = record

        try:
            if workers == 1:
                for job in jobs:
                    accept(*run_job(job, tmp, settings))
            else:
                # biggest first, so one long video does not start last and finish alone
                ordered = sorted(jobs, key=lambda j: -_size(j.source))
                with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context()) as pool:
                    pending = {pool.submit(run_job, job, tmp, settings) for job in ordered}
                    try:
                        while pending:
                            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                            for future in done:
                                accept(*future.result())
                    except BaseException:
                        for future in pending:
                            future.cancel()
                        raise
        finally:
            bar.close()
        manifest = {
            "settings": {k: v for k, v in asdict(settings).items() if k not in ("decoder_threads", "encode_thread")},
            "videos": {name: records[name] for name in sorted(records)},
        }
        write_json(tmp / MANIFEST, manifest, indent=1, atomic=False)  # sorted keys: same input, same bytes
    return manifest


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
