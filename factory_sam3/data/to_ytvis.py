"""to_ytvis: data/frames + raw/video_annotations -> data/ytvis/<split>/annotations.json + frame folders.

Every extracted frame of a video becomes one entry of ``file_names``; each track becomes one annotation whose
``segmentations`` / ``bboxes`` / ``areas`` have one entry per extracted frame: the mask where the track is
annotated on that frame, ``null`` where it is absent or the frame was not annotated (sparse keyframes). The
video record's ``annotated_frames`` lists the frames that were annotated, empty ones included (a source frame
is annotated when raw/video_annotations has an entry for it), so evaluation can score true negatives and
ignore predictions on frames nobody looked at.
Splits come from data/splits.json (written by to_coco), so no video is in two splits and the image and video
datasets agree. Tracks annotated on fewer than ``min_track_frames`` extracted frames are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from factory_sam3 import layout
from factory_sam3.cli import stage_main
from factory_sam3.config import Invalid, ensure
from factory_sam3.data.raw import (
    image_size,
    load_categories,
    load_manifest,
    load_video_annotations,
    track_sort_key,
    usable_videos,
    video_annotations_path,
)
from factory_sam3.errors import UserError, warn
from factory_sam3.formats import coco, ytvis
from factory_sam3.formats.rle import SegmentationError, rle_with_box, to_rle
from factory_sam3.io import atomic_dir, link_or_copy, read_json

STAGE = "to_ytvis"


@dataclass(frozen=True)
class Params:
    """params.yaml section ``to_ytvis``."""

    min_track_frames: int  # drop tracks annotated on fewer extracted frames than this

    def check(self) -> None:
        if self.min_track_frames < 1:
            raise Invalid("min_track_frames", f"must be an integer >= 1, got {self.min_track_frames!r}")


def build_video(
    raw: Path,
    frames: Path,
    name: str,
    entry: dict,
    categories: dict[str, int],
    video_id: int,
    first_ann_id: int,
    min_track_frames: int,
) -> tuple[dict, list[dict], int]:
    """``(video record, track annotations, dropped tracks)`` for one video."""
    frame_list = entry.get("frames", [])
    manifest_path = frames / layout.FRAMES_MANIFEST
    if not frame_list:
        raise UserError("no extracted frames", manifest_path, f"video {name}")
    size = None
    for frame in frame_list:
        # a header read per frame: sizes must agree within a video (validate re-checks by decoding)
        frame_size = image_size(str(frames / name / frame["file"]))
        if size is None:
            size = frame_size
        elif frame_size != size:
            raise UserError(
                f"frame is {frame_size[0]}x{frame_size[1]}, the video's first frame is {size[0]}x{size[1]}",
                frames / name / frame["file"],
            )
    width, height = size
    file_names = [f"{name}/{f['file']}" for f in frame_list]

    annotations = load_video_annotations(raw, name)
    if annotations is None:
        warn(f"{raw / layout.RAW_VIDEO_ANNOTATIONS}: no annotations for video {name}; it is kept without tracks")
        return ytvis.video_record(video_id, file_names, width, height, annotated_frames=[]), [], 0
    annotated = [t for t, frame in enumerate(frame_list) if str(frame["source_index"]) in annotations["frames"]]
    video = ytvis.video_record(video_id, file_names, width, height, annotated_frames=annotated)
    ann_path = video_annotations_path(raw, name)
    if (annotations["width"], annotations["height"]) != (width, height):
        raise UserError(
            f"declared size {annotations['width']}x{annotations['height']} "
            f"but the extracted frames are {width}x{height}",
            ann_path,
        )
    extracted = {str(frame["source_index"]) for frame in frame_list}
    if annotations["frames"] and not extracted & set(annotations["frames"]):
        warn(
            f"{ann_path}: none of the annotated source frames was extracted "
            "(extract_frames.frame_interval skips them?); the video has no annotated frame"
        )
    tracks = []
    dropped = 0
    for track_id in sorted(annotations["tracks"], key=track_sort_key):
        category = annotations["tracks"][track_id]["category"]
        if category not in categories:
            raise UserError(
                f"unknown category '{category}'; known: {sorted(categories)}", ann_path, f"track {track_id}"
            )
        segmentations, bboxes, areas = [], [], []
        for frame in frame_list:
            key = str(frame["source_index"])
            segmentation = annotations["frames"].get(key, {}).get(track_id)
            rle = bbox = area = None
            if segmentation is not None:
                try:
                    rle, bbox, area = rle_with_box(to_rle(segmentation, height, width))
                except SegmentationError as err:
                    raise UserError(str(err), ann_path, f"frame {key} track {track_id}") from None
                if area == 0:  # an empty mask says "absent": same as null
                    rle = bbox = area = None
            segmentations.append(rle)
            bboxes.append(bbox)
            areas.append(area)
        if sum(s is not None for s in segmentations) < min_track_frames:
            dropped += 1
            continue
        tracks.append(
            ytvis.track_record(first_ann_id + len(tracks), video_id, categories[category], segmentations, bboxes, areas)
        )
    return video, tracks, dropped


def run(
    params: Params,
    raw: Path = layout.RAW,
    frames: Path = layout.FRAMES,
    splits_file: Path = layout.SPLITS_FILE,
    out: Path = layout.YTVIS,
    progress: bool = True,
) -> dict:
    """Build the YTVIS splits; returns a summary (videos, frames and tracks per split)."""
    params = ensure(Params, params, STAGE)
    raw, frames, splits_file, out = Path(raw), Path(frames), Path(splits_file), Path(out)
    # entered first so that the previous output is gone even when the checks below fail
    with atomic_dir(out) as tmp:
        return _build(raw, frames, splits_file, tmp, params.min_track_frames, progress)


def show(summary: dict) -> None:
    for split in layout.SPLITS:
        s = summary[split]
        print(f"{split}: {s['videos']} videos, {s['frames']} frames, {s['tracks']} tracks")
    if summary["tracks_dropped"]:
        print(f"dropped {summary['tracks_dropped']} tracks below {STAGE}.min_track_frames")


def main(argv: list[str] | None = None) -> None:
    stage_main(STAGE, __doc__, Params, run, show, argv)


def _build(raw: Path, frames: Path, splits_file: Path, tmp: Path, min_track_frames: int, progress: bool) -> dict:
    categories = load_categories(raw)
    by_name, _ = coco.category_maps(categories)
    manifest_path = frames / layout.FRAMES_MANIFEST
    if not manifest_path.is_file():
        raise UserError("file not found (run the extract_frames stage first)", manifest_path)
    videos = usable_videos(load_manifest(frames), manifest_path)
    if not splits_file.is_file():
        raise UserError("file not found (run the to_coco stage first: it assigns the splits)", splits_file)
    split_of = read_json(splits_file)
    if not isinstance(split_of, dict):
        raise UserError("must map video and image names to splits", splits_file)
    for name in videos:
        if split_of.get(name) not in layout.SPLITS:
            raise UserError("video has no split (rerun to_coco after extract_frames)", splits_file, name)

    summary: dict[str, dict] = {}
    dropped = 0
    bar = tqdm(total=len(videos), desc="to_ytvis: videos", unit="video", disable=not progress)
    for split in layout.SPLITS:
        split_dir = tmp / split
        split_dir.mkdir()
        records, annotations = [], []
        for name in sorted(v for v in videos if split_of[v] == split):
            video, tracks, n_dropped = build_video(
                raw, frames, name, videos[name], by_name, len(records) + 1, len(annotations) + 1, min_track_frames
            )
            dropped += n_dropped
            (split_dir / name).mkdir()
            for frame in videos[name]["frames"]:
                link_or_copy(frames / name / frame["file"], split_dir / name / frame["file"])
            records.append(video)
            annotations.extend(tracks)
            bar.update()
        ytvis.write(split_dir / layout.YTVIS_ANNOTATIONS, ytvis.dataset(records, annotations, categories))
        summary[split] = {
            "videos": len(records),
            "tracks": len(annotations),
            "frames": sum(v["length"] for v in records),
        }
    bar.close()
    summary["tracks_dropped"] = dropped
    return summary
