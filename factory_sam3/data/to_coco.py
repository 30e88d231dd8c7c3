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

import json
import multiprocessing
import os
import shutil
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from PIL import Image
from tqdm import tqdm

from factory_sam3 import layout
from factory_sam3.atomic import atomic_dir, write_json
from factory_sam3.errors import UserError
from factory_sam3.formats import coco
from factory_sam3.formats.rle import SegmentationError, encode_mask01, read_mask_file, rle_with_box, to_rle
from factory_sam3.data.splits import assign_splits

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
# A process pool pays off only when the masks would take longer to decode and encode than the ~0.5 s a
# fresh worker server needs to start: estimated from the mask count and the first image's size.
SECONDS_PER_MASK_PIXEL = 5e-9  # PNG decode + threshold + encode, measured: ~4.4 ms per 1280x720 mask
POOL_MIN_SECONDS = 1.0


def warn(message: str) -> None:
    """A problem worth knowing that does not stop the stage (one line on stderr, no traceback)."""
    print(f"warning: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- reading data/raw and data/frames


def read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError("file not found", path) from None
    except json.JSONDecodeError as err:
        raise UserError(f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}", path) from None


def load_categories(raw: Path) -> list[dict]:
    path = raw / "categories.json"
    data = read_json_file(path)
    if not isinstance(data, list) or not data:
        raise UserError("must be a non-empty list of {id, name, supercategory}", path)
    seen_ids, seen_names, out = set(), set(), []
    for i, cat in enumerate(data):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or not isinstance(cat.get("name"), str):
            raise UserError("needs an integer 'id' and a string 'name'", path, f"category {i}")
        if cat["id"] in seen_ids or cat["name"] in seen_names:
            raise UserError(f"duplicate category id or name ({cat['id']}, {cat['name']})", path, f"category {i}")
        seen_ids.add(cat["id"])
        seen_names.add(cat["name"])
        out.append({"id": cat["id"], "name": cat["name"], "supercategory": cat.get("supercategory", cat["name"])})
    return out


def list_stills(raw: Path) -> dict[str, Path]:
    """``{image name (stem): path}`` of raw/images/*."""
    images_dir = raw / "images"
    if not images_dir.is_dir():
        return {}
    stills: dict[str, Path] = {}
    for path in sorted(images_dir.iterdir()):
        if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
            continue
        if path.stem in stills:
            raise UserError(f"two images share the name '{path.stem}' ({stills[path.stem].name})", path)
        stills[path.stem] = path
    return stills


def index_masks(masks_dir: Path, stills: Iterable[str], category_names: Iterable[str]) -> dict[str, list[tuple[str, Path]]]:
    """``{image: [(class, mask path), ...]}`` from masks named ``<image>_<class>.png``.

    One directory listing instead of an exists() per image and class (as Script 1 does). Class names may
    contain underscores, so the longest class name that matches a known image wins."""
    if not masks_dir.is_dir():
        return {}
    stills = set(stills)
    order = {name: i for i, name in enumerate(category_names)}  # annotations in category order, as Script 1
    names = sorted(order, key=len, reverse=True)
    found: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    unmatched = []
    for entry in sorted(os.scandir(masks_dir), key=lambda e: e.name):
        if not entry.name.lower().endswith(".png"):
            continue
        stem = entry.name[:-4]
        for name in names:
            if stem.endswith("_" + name) and stem[: -len(name) - 1] in stills:
                found[stem[: -len(name) - 1]].append((name, Path(entry.path)))
                break
        else:
            unmatched.append(entry.name)
    if unmatched:
        warn(f"{masks_dir}: {len(unmatched)} mask file(s) match no image and class (e.g. {unmatched[0]}); ignored")
    return {image: sorted(masks, key=lambda m: order[m[0]]) for image, masks in found.items()}


def load_manifest(frames: Path) -> dict[str, dict]:
    path = frames / "manifest.json"
    data = read_json_file(path)
    if not isinstance(data, dict) or not isinstance(data.get("videos"), dict):
        raise UserError("must hold {'videos': {name: {...}}}", path)
    for name, video in data["videos"].items():
        if not isinstance(video, dict) or not isinstance(video.get("frames", []), list):
            raise UserError("needs a 'frames' list", path, f"video {name}")
        for i, frame in enumerate(video.get("frames", [])):
            if (
                not isinstance(frame, dict)
                or not isinstance(frame.get("file"), str)
                or not isinstance(frame.get("source_index"), int)
            ):
                raise UserError("frame needs 'file' (str) and 'source_index' (int)", path, f"video {name} frame {i}")
    return data["videos"]


def usable_videos(manifest: dict[str, dict], manifest_path: Path) -> dict[str, dict]:
    """Videos whose frames were extracted; skipped ones are left out with a warning."""
    out = {}
    for name in sorted(manifest):
        video = manifest[name]
        if video.get("status", "ok") != "ok":
            warn(f"{manifest_path}: video {name}: {video.get('status')} ({video.get('error')}); left out")
            continue
        out[name] = video
    return out


def load_video_annotations(raw: Path, video: str) -> dict | None:
    """raw/video_annotations/<video>.json checked for shape, or None when the video has no annotations."""
    path = raw / "video_annotations" / f"{video}.json"
    if not path.is_file():
        return None
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise UserError("top level must be a JSON object", path)
    for key, kind in (("width", int), ("height", int), ("tracks", dict), ("frames", dict)):
        if not isinstance(data.get(key), kind):
            raise UserError(f"missing or wrong '{key}' (expected {kind.__name__})", path)
    for track_id, track in data["tracks"].items():
        if not isinstance(track, dict) or not isinstance(track.get("category"), str):
            raise UserError("needs a 'category' name", path, f"track {track_id}")
    for frame, instances in data["frames"].items():
        if not str(frame).isdigit() or not isinstance(instances, dict):
            raise UserError("frame keys must be source frame indices mapping track ids to masks", path, f"frame {frame}")
        for track_id in instances:
            if track_id not in data["tracks"]:
                raise UserError(f"track {track_id} is not declared in 'tracks'", path, f"frame {frame}")
    return data


def track_sort_key(track_id: str) -> tuple:
    return (0, int(track_id), "") if str(track_id).isdigit() else (1, 0, str(track_id))


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


def image_size(path: str) -> tuple[int, int]:
    """(width, height) from the image header (no pixel decode; validate decodes every image)."""
    try:
        with Image.open(path) as img:
            return img.size
    except FileNotFoundError:
        raise UserError("image not found", path) from None
    except (OSError, SyntaxError) as err:
        raise UserError(f"unreadable image ({err})", path) from None


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


def process_pool(workers: int, initializer=None, preload: tuple[str, ...] = ()):
    """A process pool whose workers start from a clean server process ("forkserver"), not from a fork of
    this one: forking a process in which OpenCV (or torch, or any library) already started threads can
    deadlock the children. The server imports this module (and ``preload``) once, so workers start fast."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__, *preload])
    else:
        context = multiprocessing.get_context("spawn")
    return context.Pool(workers, initializer=initializer)


def resolve_workers(workers: int) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise UserError(f"'to_coco.workers' must be an integer >= 0 (0 = one per core), got {workers!r}", "params.yaml")
    return workers or (os.cpu_count() or 1)


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
    if workers <= 1 or estimated_seconds(jobs) < POOL_MIN_SECONDS:
        for job in jobs:
            results.append(_encode_or_error(job))
            bar.update()
    else:
        chunk = max(1, min(32, len(jobs) // (workers * 4)))
        with process_pool(workers, _init_worker, preload=("cv2",)) as pool:
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
    masks = index_masks(raw / "masks", stills, by_name)
    ann_dir = raw / "image_annotations"
    jobs = []
    for image, path in stills.items():
        job = Job(name=path.name, group=image, image=str(path))
        job.masks = [(by_name[cls], str(mask)) for cls, mask in masks.get(image, [])]
        ann_path = ann_dir / f"{image}.json"
        if ann_path.is_file():
            job.source = str(ann_path)
            data = read_json_file(ann_path)
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
            raise UserError(f"annotations without an image in {raw / 'images'}: {orphans[:5]}", ann_dir)
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
        ann_path = raw / "video_annotations" / f"{video}.json"
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
                    raise UserError(f"unknown category '{category}'; known: {sorted(by_name)}", ann_path, f"track {track_id}")
                job.segmentations.append(
                    (by_name[category], annotations["frames"][key][track_id], f"frame {key} track {track_id}")
                )
            jobs.append(job)
    return jobs


# --------------------------------------------------------------------------- the stage


def link_or_copy(src: str | os.PathLike, dst: Path) -> None:
    """Hard-link (no extra disk, instant) and fall back to a copy across file systems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def read_fixed_splits(raw: Path) -> tuple[dict[str, str], dict[str, str]]:
    groups, fixed = {}, {}
    for name, target in (("groups.json", groups), ("splits.json", fixed)):
        path = raw / name
        if path.is_file():
            data = read_json_file(path)
            if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
                raise UserError("must map names to strings", path)
            target.update(data)
    return groups, fixed


def check_params(params: dict) -> tuple[int, dict, int, int]:
    sample_rate = params.get("sample_rate", 1)
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 1:
        raise UserError(f"'to_coco.sample_rate' must be an integer >= 1, got {sample_rate!r}", "params.yaml")
    seed = params.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UserError(f"'to_coco.seed' must be an integer, got {seed!r}", "params.yaml")
    splits = params.get("splits", {"train": 0.7, "valid": 0.15, "test": 0.15})
    return sample_rate, splits, seed, resolve_workers(params.get("workers", 0))


def run(
    params: dict,
    raw: Path = layout.RAW,
    frames: Path = layout.FRAMES,
    out: Path = layout.COCO,
    splits_file: Path = layout.SPLITS_FILE,
    progress: bool = True,
) -> dict:
    """Build the COCO splits and data/splits.json; returns a summary (images and annotations per split)."""
    sample_rate, ratios, seed, workers = check_params(params)
    raw, frames, out, splits_file = Path(raw), Path(frames), Path(out), Path(splits_file)
    # outputs of an earlier run go first: a failure below must not leave them for to_ytvis/validate
    splits_file.unlink(missing_ok=True)
    with atomic_dir(out) as tmp:
        summary = _build(raw, frames, tmp, splits_file, sample_rate, ratios, seed, workers, progress)
    return summary


def _build(
    raw: Path, frames: Path, tmp: Path, splits_file: Path, sample_rate: int, ratios: dict, seed: int, workers: int,
    progress: bool,
) -> dict:
    if not raw.is_dir():
        raise UserError("raw data folder not found (run the fetch stage first)", raw)
    categories = load_categories(raw)

    videos: dict[str, dict] = {}
    if (frames / "manifest.json").is_file():
        videos = usable_videos(load_manifest(frames), frames / "manifest.json")
    elif (raw / "videos").is_dir() or (raw / "frame_folders").is_dir():
        raise UserError("no manifest.json (run the extract_frames stage first)", frames)
    annotated_dir = raw / "video_annotations"
    if annotated_dir.is_dir():
        missing = sorted(p.stem for p in annotated_dir.glob("*.json") if p.stem not in videos)
        if missing:
            warn(f"{annotated_dir}: annotations for videos without extracted frames: {missing[:5]}; left out")

    jobs = still_jobs(raw, categories) + video_frame_jobs(raw, frames, videos, categories, sample_rate)
    still_names = {job.group for job in jobs if job.group not in videos}
    groups, fixed = read_fixed_splits(raw)
    split_of = assign_splits(videos, still_names, ratios, seed, groups, fixed, raw / "splits.json")

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
    encoded = encode_all(jobs, resolve_workers(workers), progress)
    images, annotations = [], []
    for image_id, enc in enumerate(encoded, start=1):
        images.append(coco.image_record(image_id, enc.name, enc.width, enc.height))
        for category_id, rle, bbox, area in enc.instances:
            annotations.append(coco.annotation_record(len(annotations) + 1, image_id, category_id, rle, bbox, area))
    coco.write(output_json, coco.dataset(images, annotations, categories))
    return {"images": len(images), "annotations": len(annotations)}
