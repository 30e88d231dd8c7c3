"""to_coco: data/raw + data/frames -> data/coco/<split>/_annotations.coco.json (+ images) and data/splits.json.

Stage 1 images are the still images (masks/<image>_<class>.png, one mask per class as in the guide's Script 1,
or image_annotations/<image>.json with instances) plus, for every video, every ``sample_rate``-th ANNOTATED
extracted frame (guide Phase 1 samples frames the same way). Each mask is encoded once; bbox and area come
from that encoding. Images without any annotation are kept as negatives. Splits are assigned by group
(factory_sam3.data.splits) and written to data/splits.json, which to_ytvis reuses.

Decoding and encoding masks is the expensive part, so the per-image work runs in a process pool (one worker
per core by default) whenever the estimated work outweighs the pool's start-up; everything else is
bookkeeping in the parent. Output is identical either way.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from factory_sam3 import layout
from factory_sam3.cli import stage_main
from factory_sam3.config import Invalid, ensure
from factory_sam3.data import parallel
from factory_sam3.data.raw import (
    image_size,
    index_masks,
    list_stills,
    load_categories,
    load_manifest,
    load_video_annotations,
    read_fixed_splits,
    track_sort_key,
    usable_videos,
    video_annotations_path,
)
from factory_sam3.data.splits import assign_splits, ratios_problem
from factory_sam3.errors import UserError, warn
from factory_sam3.formats import coco
from factory_sam3.formats.rle import SegmentationError, encode_mask01, read_mask_file, rle_with_box, to_rle
from factory_sam3.io import atomic_dir, link_or_copy, read_json, write_json

STAGE = "to_coco"
# A process pool pays off only when the masks would take longer to decode and encode than a fresh worker
# server needs to start (parallel.worth_a_pool): estimated from the mask count and the first image's size.
SECONDS_PER_MASK_PIXEL = 5e-9  # PNG decode + threshold + encode, measured: ~4.4 ms per 1280x720 mask


@dataclass(frozen=True)
class Params:
    """params.yaml section ``to_coco``."""

    sample_rate: int  # every N-th annotated video frame becomes an image
    seed: int  # split assignment
    splits: dict[str, float]  # train / valid / test ratios
    workers: int  # mask-encoding processes; 0 = one per core

    def check(self) -> None:
        if self.sample_rate < 1:
            raise Invalid("sample_rate", f"must be an integer >= 1, got {self.sample_rate!r}")
        problem = ratios_problem(self.splits)
        if problem:
            raise Invalid("splits", problem)
        if self.workers < 0:
            raise Invalid("workers", f"must be an integer >= 0 (0 = one per core), got {self.workers!r}")


# --------------------------------------------------------------------------- per-image work (process pool)


@dataclass
class Job:
    """One output image: where its pixels are and which masks / segmentations belong to it."""

    name: str  # output file name in data/coco/<split>/
    group: str  # video name or still image name: what the split is decided by
    image: str  # source image path
    masks: list[tuple[int, str]] = field(default_factory=list)  # (category id, mask png)
    segmentations: list[tuple[int, Any, str]] = field(default_factory=list)  # (category id, RLE/polygons, record)
    source: str = ""  # annotation file named in errors
    declared_size: tuple[int, int] | None = None  # (width, height) the annotation file claims


@dataclass
class Encoded:
    name: str
    width: int
    height: int
    instances: list[tuple[int, dict, list[float], int]]  # (category id, rle, bbox, area)
    empty_masks: int = 0


def encode_job(job: Job) -> Encoded:
    """Encode every mask of one image once; bbox and area from that encoding. Empty masks are dropped."""
    width, height = image_size(job.image)
    if job.declared_size is not None and tuple(job.declared_size) != (width, height):
        raise UserError(
            f"declared size {job.declared_size[0]}x{job.declared_size[1]} but {job.image} is {width}x{height}",
            job.source,
        )
    instances, empty = [], 0
    for category_id, mask_path in job.masks:
        mask = read_mask_file(mask_path)
        if mask is None:
            raise UserError("unreadable or truncated mask image", mask_path)
        if mask.shape != (height, width):
            raise UserError(
                f"mask is {mask.shape[1]}x{mask.shape[0]} but its image {Path(job.image).name} is {width}x{height}",
                mask_path,
            )
        rle, bbox, area = encode_mask01(mask)
        if area == 0:
            empty += 1
            continue
        instances.append((category_id, rle, bbox, area))
    for category_id, segmentation, record in job.segmentations:
        try:
            rle, bbox, area = rle_with_box(to_rle(segmentation, height, width))
        except SegmentationError as err:
            raise UserError(str(err), job.source, record) from None
        if area == 0:
            empty += 1
            continue
        instances.append((category_id, rle, bbox, area))
    return Encoded(job.name, width, height, instances, empty)


def _encode_or_error(job: Job) -> Encoded | tuple[str, str | None, str | None]:
    # a UserError is returned, not raised, so the parent re-raises it with its file and record intact
    try:
        return encode_job(job)
    except UserError as err:
        return (err.problem, err.file, err.record)


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already; cv2's own threads would oversubscribe


def estimated_seconds(jobs: list[Job]) -> float:
    """Sequential time the mask files would take (RLE and polygon segmentations are cheap by comparison)."""
    masks = sum(len(job.masks) for job in jobs)
    if not masks:
        return 0.0
    width, height = image_size(next(job.image for job in jobs if job.masks))
    return masks * width * height * SECONDS_PER_MASK_PIXEL


def encode_all(jobs: list[Job], workers: int, progress: bool = True) -> list[Encoded]:
    """Run encode_job over all jobs, in a process pool when it pays off; results in job order."""
    results: list = []
    bar = tqdm(total=len(jobs), desc="to_coco: encoding masks", unit="img", disable=not progress, file=sys.stderr)
    if not parallel.worth_a_pool(workers, estimated_seconds(jobs)):
        for job in jobs:
            results.append(_encode_or_error(job))
            bar.update()
    else:
        chunk = max(1, min(32, len(jobs) // (workers * 4)))
        with parallel.process_pool(workers, _init_worker, preload=(__name__, "cv2")) as pool:
            for result in pool.imap(_encode_or_error, jobs, chunksize=chunk):
                results.append(result)
                bar.update()
    bar.close()
    for result in results:
        if isinstance(result, tuple):
            raise UserError(*result)
    return results


# --------------------------------------------------------------------------- collecting jobs


def still_jobs(raw: Path, categories: list[dict]) -> list[Job]:
    by_name, _ = coco.category_maps(categories)
    stills = list_stills(raw)
    masks = index_masks(raw / layout.RAW_MASKS, stills, by_name)
    ann_dir = raw / layout.RAW_IMAGE_ANNOTATIONS
    jobs = []
    for image, path in stills.items():
        job = Job(name=path.name, group=image, image=str(path))
        job.masks = [(by_name[cls], str(mask)) for cls, mask in masks.get(image, [])]
        ann_path = ann_dir / f"{image}.json"
        if ann_path.is_file():
            job.source = str(ann_path)
            data = read_json(ann_path)
            if not isinstance(data, dict) or not isinstance(data.get("instances"), list):
                raise UserError("needs an 'instances' list", ann_path)
            if isinstance(data.get("width"), int) and isinstance(data.get("height"), int):
                job.declared_size = (data["width"], data["height"])
            for i, inst in enumerate(data["instances"]):
                if not isinstance(inst, dict) or inst.get("category") not in by_name:
                    raise UserError(
                        f"unknown category {inst.get('category') if isinstance(inst, dict) else inst!r}; "
                        f"known: {sorted(by_name)}",
                        ann_path,
                        f"instance {i}",
                    )
                job.segmentations.append((by_name[inst["category"]], inst.get("segmentation"), f"instance {i}"))
        jobs.append(job)
    if ann_dir.is_dir():
        orphans = sorted(p.name for p in ann_dir.glob("*.json") if p.stem not in stills)
        if orphans:
            raise UserError(f"annotations without an image in {raw / layout.RAW_IMAGES}: {orphans[:5]}", ann_dir)
    return jobs


def video_frame_jobs(
    raw: Path, frames: Path, videos: dict[str, dict], categories: list[dict], sample_rate: int
) -> list[Job]:
    """Every ``sample_rate``-th annotated extracted frame of every usable video."""
    by_name, _ = coco.category_maps(categories)
    jobs = []
    for video, entry in videos.items():
        annotations = load_video_annotations(raw, video)
        if annotations is None:
            continue
        ann_path = video_annotations_path(raw, video)
        annotated = [f for f in entry.get("frames", []) if str(f.get("source_index")) in annotations["frames"]]
        for frame in annotated[::sample_rate]:
            key = str(frame["source_index"])
            job = Job(
                name=f"{video}_{frame['file']}",
                group=video,
                image=str(frames / video / frame["file"]),
                source=str(ann_path),
                declared_size=(annotations["width"], annotations["height"]),
            )
            for track_id in sorted(annotations["frames"][key], key=track_sort_key):
                category = annotations["tracks"][track_id]["category"]
                if category not in by_name:
                    raise UserError(
                        f"unknown category '{category}'; known: {sorted(by_name)}", ann_path, f"track {track_id}"
                    )
                job.segmentations.append(
                    (by_name[category], annotations["frames"][key][track_id], f"frame {key} track {track_id}")
                )
            jobs.append(job)
    return jobs


# --------------------------------------------------------------------------- the stage


def run(
    params: Params,
    raw: Path = layout.RAW,
    frames: Path = layout.FRAMES,
    out: Path = layout.COCO,
    splits_file: Path = layout.SPLITS_FILE,
    progress: bool = True,
) -> dict:
    """Build the COCO splits and data/splits.json; returns a summary (images and annotations per split)."""
    params = ensure(Params, params, STAGE)
    raw, frames, out, splits_file = Path(raw), Path(frames), Path(out), Path(splits_file)
    workers = parallel.resolve_workers(params.workers)
    # outputs of an earlier run go first: a failure below must not leave them for to_ytvis/validate
    splits_file.unlink(missing_ok=True)
    with atomic_dir(out) as tmp:
        summary = _build(
            raw, frames, tmp, splits_file, params.sample_rate, params.splits, params.seed, workers, progress
        )
    return summary


def show(summary: dict) -> None:
    for split in layout.SPLITS:
        s = summary[split]
        print(f"{split}: {s['images']} images ({s['negatives']} negatives), {s['annotations']} annotations")
    if summary["empty_masks_dropped"]:
        print(f"dropped {summary['empty_masks_dropped']} empty masks")


def main(argv: list[str] | None = None) -> None:
    stage_main(STAGE, __doc__, Params, run, show, argv)


def _build(
    raw: Path,
    frames: Path,
    tmp: Path,
    splits_file: Path,
    sample_rate: int,
    ratios: dict,
    seed: int,
    workers: int,
    progress: bool,
) -> dict:
    if not raw.is_dir():
        raise UserError("raw data folder not found (run the fetch stage first)", raw)
    categories = load_categories(raw)

    videos: dict[str, dict] = {}
    manifest_path = frames / layout.FRAMES_MANIFEST
    if manifest_path.is_file():
        videos = usable_videos(load_manifest(frames), manifest_path)
    elif (raw / layout.RAW_VIDEOS).is_dir() or (raw / layout.RAW_FRAME_FOLDERS).is_dir():
        raise UserError(f"no {layout.FRAMES_MANIFEST} (run the extract_frames stage first)", frames)
    annotated_dir = raw / layout.RAW_VIDEO_ANNOTATIONS
    if annotated_dir.is_dir():
        missing = sorted(p.stem for p in annotated_dir.glob("*.json") if p.stem not in videos)
        if missing:
            warn(f"{annotated_dir}: annotations for videos without extracted frames: {missing[:5]}; left out")

    jobs = still_jobs(raw, categories) + video_frame_jobs(raw, frames, videos, categories, sample_rate)
    still_names = {job.group for job in jobs if job.group not in videos}
    groups, fixed = read_fixed_splits(raw)
    split_of = assign_splits(videos, still_names, ratios, seed, groups, fixed, raw / layout.RAW_SPLITS)

    names = defaultdict(list)
    for job in jobs:
        names[job.name].append(job.image)
    clashes = {n: p for n, p in names.items() if len(p) > 1}
    if clashes:
        name, paths = next(iter(sorted(clashes.items())))
        raise UserError(f"output image name '{name}' would be used by {paths}; rename one", raw)

    encoded = encode_all(jobs, workers, progress)
    summary: dict[str, dict] = {}
    for split in layout.SPLITS:
        split_dir = tmp / split
        split_dir.mkdir()
        pairs = sorted(((j, e) for j, e in zip(jobs, encoded) if split_of[j.group] == split), key=lambda p: p[0].name)
        images, annotations = [], []
        for image_id, (job, enc) in enumerate(pairs, start=1):
            link_or_copy(job.image, split_dir / job.name)
            images.append(coco.image_record(image_id, job.name, enc.width, enc.height))
            for category_id, rle, bbox, area in enc.instances:
                annotations.append(coco.annotation_record(len(annotations) + 1, image_id, category_id, rle, bbox, area))
        coco.write(split_dir / layout.COCO_ANNOTATIONS, coco.dataset(images, annotations, categories))
        negatives = sum(1 for _, e in pairs if not e.instances)
        summary[split] = {"images": len(images), "annotations": len(annotations), "negatives": negatives}
    write_json(splits_file, split_of)
    summary["empty_masks_dropped"] = sum(e.empty_masks for e in encoded)
    return summary


def convert_mask_folder(
    image_folder: str | os.PathLike,
    mask_folder: str | os.PathLike,
    categories: list[dict],
    output_json: str | os.PathLike,
    workers: int = 0,
    progress: bool = False,
) -> dict:
    """The guide's Script 1 job (one folder of images + ``<image>_<class>.png`` masks -> one COCO JSON) on
    this stage's code path; used by benchmarks/bench_to_coco.py. Returns {"images", "annotations"}."""
    by_name, _ = coco.category_maps(categories)
    stills = {p.stem: p for p in sorted(Path(image_folder).glob("*.jpg"))}
    masks = index_masks(Path(mask_folder), stills, by_name)
    jobs = [
        Job(name=p.name, group=s, image=str(p), masks=[(by_name[c], str(m)) for c, m in masks.get(s, [])])
        for s, p in stills.items()
    ]
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise UserError(f"workers must be an integer >= 0 (0 = one per core), got {workers!r}")
    encoded = encode_all(jobs, parallel.resolve_workers(workers), progress)
    images, annotations = [], []
    for image_id, enc in enumerate(encoded, start=1):
        images.append(coco.image_record(image_id, enc.name, enc.width, enc.height))
        for category_id, rle, bbox, area in enc.instances:
            annotations.append(coco.annotation_record(len(annotations) + 1, image_id, category_id, rle, bbox, area))
    coco.write(output_json, coco.dataset(images, annotations, categories))
    return {"images": len(images), "annotations": len(annotations)}
