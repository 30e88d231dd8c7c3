"""validate: check data/coco and data/ytvis before any training touches them.

Every problem becomes one line ``<file>: <record>: <problem>`` (the same shape as a UserError). Errors make
the stage fail; warnings (class balance, share of negatives, empty splits) are reported only. The report is
deterministic (no timestamps, fixed order), so an unchanged dataset gives a byte-identical report.

Images are decoded fully (PIL verify + load catch truncated files) in a process pool; the JSON checks are
cheap bookkeeping in the parent.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from PIL import Image
from tqdm import tqdm

from factory_sam3 import layout
from factory_sam3.cli import stage_main
from factory_sam3.config import Invalid, ensure
from factory_sam3.data import parallel
from factory_sam3.errors import UserError
from factory_sam3.formats.rle import SegmentationError, rle_area, rle_bbox, to_rle
from factory_sam3.io import read_json, write_json

STAGE = "validate"
SHOWN_ERRORS = 20  # error lines printed; the report lists all
AREA_TOLERANCE = 0.01  # relative; plus one pixel, for areas rounded by other tools
BBOX_TOLERANCE = 1.0  # pixels, for the bbox-vs-mask comparison (a warning)
# Decoding in a process pool pays off only when it would take longer than a fresh worker server needs to
# start (parallel.worth_a_pool); estimated from the declared image sizes.
SECONDS_PER_IMAGE_PIXEL = 1e-8  # PIL verify + full JPEG decode, measured: ~8 ms per 1280x720 frame


@dataclass(frozen=True)
class Params:
    """params.yaml section ``validate`` (the guide's dataset rules; breaking them is a warning)."""

    class_balance_ratio: float  # largest / smallest class count
    negatives_min: float  # share of images without any target
    negatives_max: float

    def check(self) -> None:
        if self.class_balance_ratio < 1:
            raise Invalid("class_balance_ratio", f"must be a number >= 1, got {self.class_balance_ratio!r}")
        if not 0 <= self.negatives_min <= self.negatives_max <= 1:
            raise Invalid(
                "negatives_min",
                "and negatives_max must be numbers with 0 <= min <= max <= 1, got "
                f"{self.negatives_min!r}, {self.negatives_max!r}",
            )


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    def error(self, file: object, record: object, problem: str) -> None:
        self.errors.append(_line(file, record, problem))

    def warn(self, file: object, record: object, problem: str) -> None:
        self.warnings.append(_line(file, record, problem))

    def as_dict(self) -> dict:
        return {
            "ok": not self.errors,
            "num_errors": len(self.errors),
            "num_warnings": len(self.warnings),
            "errors": self.errors,
            "warnings": self.warnings,
            "stats": self.stats,
        }


def _line(file: object, record: object, problem: str) -> str:
    return ": ".join(str(p) for p in (file, record) if p not in (None, "")) + f": {problem}"


# --------------------------------------------------------------------------- small checks


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def unsafe_file_name(name: str) -> str | None:
    """Why ``name`` would escape the dataset root (absolute, drive, ``..``), or None when it is safe."""
    if not name:
        return "empty file name"
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute():
        return f"absolute file name '{name}' escapes the dataset root"
    if PureWindowsPath(name).drive:
        return f"file name '{name}' names a drive and escapes the dataset root"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return f"file name '{name}' escapes the dataset root ('..')"
    return None


def load_json(path: Path, report: Report, required: tuple[str, ...]) -> dict | None:
    try:
        data = read_json(path)
    except UserError as err:
        report.error(path, None, err.problem)
        return None
    if not isinstance(data, dict):
        report.error(path, None, "top level must be a JSON object")
        return None
    ok = True
    for key in required:
        if key not in data:
            report.error(path, None, f"missing required key '{key}'")
            ok = False
        elif not isinstance(data[key], list):
            report.error(path, None, f"'{key}' must be a list")
            ok = False
    return data if ok else None


def check_records(path: Path, records: list, kind: str, required: dict[str, Any], report: Report) -> dict[int, dict]:
    """Records that have every required key with the right type and a unique id, by id."""
    by_id: dict[int, dict] = {}
    for i, record in enumerate(records):
        label = f"{kind} {record.get('id')}" if isinstance(record, dict) and "id" in record else f"{kind} #{i}"
        if not isinstance(record, dict):
            report.error(path, f"{kind} #{i}", "must be an object")
            continue
        missing = [k for k in required if k not in record]
        if missing:
            report.error(path, label, f"missing required key(s) {missing}")
            continue
        wrong = [k for k, check in required.items() if not check(record[k])]
        if wrong:
            report.error(path, label, f"wrong type or value for {', '.join(f'{k}={record[k]!r}' for k in wrong)}")
            continue
        if record["id"] in by_id:
            report.error(path, label, f"duplicate {kind} id {record['id']}")
            continue
        by_id[record["id"]] = record
    return by_id


def _positive_int(v: Any) -> bool:
    return _is_int(v) and v > 0


CATEGORY_KEYS = {"id": _is_int, "name": lambda v: isinstance(v, str) and bool(v)}
IMAGE_KEYS = {"id": _is_int, "file_name": lambda v: isinstance(v, str), "width": _positive_int, "height": _positive_int}
ANNOTATION_KEYS = {
    "id": _is_int,
    "image_id": _is_int,
    "category_id": _is_int,
    "segmentation": lambda v: isinstance(v, (dict, list)),
    "bbox": lambda v: isinstance(v, list),
    "area": _is_number,
    "iscrowd": lambda v: v in (0, 1),
}
VIDEO_KEYS = {
    "id": _is_int,
    "file_names": lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v),
    "length": _is_int,
    "width": _positive_int,
    "height": _positive_int,
}
TRACK_KEYS = {
    "id": _is_int,
    "video_id": _is_int,
    "category_id": _is_int,
    "segmentations": lambda v: isinstance(v, list),
    "bboxes": lambda v: isinstance(v, list),
    "areas": lambda v: isinstance(v, list),
}


def check_instance(
    path: Path, record: str, segmentation: Any, bbox: Any, area: Any, width: int, height: int, report: Report
) -> int | None:
    """Check one mask with its bbox and area against an image of ``width x height``; returns the mask area."""
    if isinstance(segmentation, dict):
        size = segmentation.get("size")
        if isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size) and size != [height, width]:
            report.error(path, record, f"RLE size {size} (height, width) != image size [{height}, {width}]")
            return None
    try:
        rle = to_rle(segmentation, height, width)
    except SegmentationError as err:
        report.error(path, record, f"undecodable segmentation: {err}")
        return None
    mask_area = rle_area(rle)
    if mask_area == 0:
        report.error(path, record, "empty mask (no object pixel)")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        report.error(path, record, f"bbox must be [x, y, w, h] numbers, got {bbox!r}")
    else:
        x, y, w, h = bbox
        if w <= 0 or h <= 0:
            report.error(path, record, f"non-positive bbox size {w}x{h}")
        elif x < 0 or y < 0 or x + w > width + 0.5 or y + h > height + 0.5:
            report.error(path, record, f"bbox {bbox} outside the image ({width}x{height})")
        elif mask_area and max(abs(a - b) for a, b in zip(bbox, rle_bbox(rle))) > BBOX_TOLERANCE:
            report.warn(path, record, f"bbox {bbox} differs from the mask's box {rle_bbox(rle)}")
    if not _is_number(area):
        report.error(path, record, f"area must be a number, got {area!r}")
    elif abs(area - mask_area) > 1 + AREA_TOLERANCE * mask_area:
        report.error(path, record, f"area {area} inconsistent with the mask ({mask_area} pixels)")
    return mask_area


# --------------------------------------------------------------------------- image decoding (process pool)


def inspect_image(path: str) -> tuple[str, Any]:
    """``("ok", (w, h))``, ``("missing", None)`` or ``("bad", reason)`` after a full decode."""
    if not os.path.isfile(path):
        return "missing", None
    try:
        with Image.open(path) as img:
            img.verify()  # structure and checksums (PNG CRCs)
        with Image.open(path) as img:
            img.load()  # every pixel: truncated JPEGs fail here
            return "ok", img.size
    except Exception as err:  # PIL raises many types for corrupt files; any of them means unusable
        return "bad", f"{type(err).__name__}: {err}"


def inspect_images(paths: list[str], workers: int, progress: bool, pixels: int = 0) -> dict[str, tuple[str, Any]]:
    """inspect_image for every path; ``pixels`` (their total declared size) decides on a process pool."""
    results = {}
    bar = tqdm(total=len(paths), desc="validate: decoding images", unit="img", disable=not progress)
    if not parallel.worth_a_pool(workers, pixels * SECONDS_PER_IMAGE_PIXEL):
        for p in paths:
            results[p] = inspect_image(p)
            bar.update()
    else:
        with parallel.process_pool(workers, preload=(__name__,)) as pool:
            for p, result in zip(paths, pool.imap(inspect_image, paths, chunksize=16)):
                results[p] = result
                bar.update()
    bar.close()
    return results


@dataclass
class ImageRef:
    path: str
    json_path: Path
    record: str
    width: int
    height: int


def check_image_refs(refs: list[ImageRef], workers: int, progress: bool, report: Report) -> dict[str, tuple[int, int]]:
    """Decode every referenced image once; report missing, corrupt and wrongly-sized ones. Returns sizes."""
    declared = {r.path: r.width * r.height for r in refs}
    unique = sorted(declared)
    results = inspect_images(unique, workers, progress, pixels=sum(declared.values()))
    sizes = {}
    for ref in refs:
        status, value = results[ref.path]
        if status == "missing":
            report.error(ref.json_path, ref.record, f"image file missing: {ref.path}")
        elif status == "bad":
            report.error(ref.json_path, ref.record, f"image unreadable or truncated: {ref.path} ({value})")
        else:
            sizes[ref.path] = value
            if value != (ref.width, ref.height):
                report.error(
                    ref.json_path,
                    ref.record,
                    f"image {ref.path} is {value[0]}x{value[1]} but declared {ref.width}x{ref.height}",
                )
    return sizes


def referenced(
    path: Path, record: str, ann: dict, kind: str, parents: dict, categories: dict, report: Report
) -> dict | None:
    """The image or video (``kind``) an annotation is on, when it and the annotation's category exist; else an
    error in the report and None."""
    parent = parents.get(ann[f"{kind}_id"])
    if parent is None:
        report.error(path, record, f"refers to missing {kind} {ann[f'{kind}_id']}")
    elif ann["category_id"] not in categories:
        report.error(path, record, f"refers to missing category {ann['category_id']}")
        return None
    return parent


# --------------------------------------------------------------------------- COCO


def check_coco_split(split_dir: Path, report: Report, refs: list[ImageRef]) -> dict | None:
    path = split_dir / layout.COCO_ANNOTATIONS
    data = load_json(path, report, ("images", "annotations", "categories"))
    if data is None:
        return None
    categories = check_records(path, data["categories"], "category", CATEGORY_KEYS, report)
    images = check_records(path, data["images"], "image", IMAGE_KEYS, report)
    for image in images.values():
        problem = unsafe_file_name(image["file_name"])
        if problem:
            report.error(path, f"image {image['id']}", problem)
            continue
        refs.append(
            ImageRef(str(split_dir / image["file_name"]), path, f"image {image['id']}", image["width"], image["height"])
        )

    annotations = check_records(path, data["annotations"], "annotation", ANNOTATION_KEYS, report)
    per_class: Counter = Counter()
    annotated_images = set()
    for ann in annotations.values():
        record = f"annotation {ann['id']}"
        image = referenced(path, record, ann, "image", images, categories, report)
        if image is None:
            continue
        check_instance(
            path, record, ann["segmentation"], ann["bbox"], ann["area"], image["width"], image["height"], report
        )
        per_class[categories[ann["category_id"]]["name"]] += 1
        annotated_images.add(ann["image_id"])
    negatives = len(images) - len(annotated_images & set(images))
    return {
        "images": len(images),
        "annotations": len(annotations),
        "per_class": {
            c["name"]: per_class.get(c["name"], 0) for c in sorted(categories.values(), key=lambda c: c["id"])
        },
        "negatives": negatives,
        "negatives_share": round(negatives / len(images), 4) if images else 0.0,
    }


# --------------------------------------------------------------------------- YTVIS


def check_ytvis_split(split_dir: Path, report: Report, refs: list[ImageRef]) -> tuple[dict | None, dict]:
    """Stats, and ``{video id: [(frame path, record)]}`` for the within-video size check after decoding."""
    path = split_dir / layout.YTVIS_ANNOTATIONS
    data = load_json(path, report, ("videos", "annotations", "categories"))
    if data is None:
        return None, {}
    categories = check_records(path, data["categories"], "category", CATEGORY_KEYS, report)
    videos = check_records(path, data["videos"], "video", VIDEO_KEYS, report)
    frames_of: dict[int, list[str]] = {}
    for video in videos.values():
        record = f"video {video['id']}"
        if not video["file_names"]:
            report.error(path, record, "no frames")
        if video["length"] != len(video["file_names"]):
            report.error(path, record, f"length {video['length']} != {len(video['file_names'])} file_names")
        frames_of[video["id"]] = []
        for name in video["file_names"]:
            problem = unsafe_file_name(name)
            if problem:
                report.error(path, record, problem)
                continue
            frame = str(split_dir / name)
            frames_of[video["id"]].append(frame)
            refs.append(ImageRef(frame, path, record, video["width"], video["height"]))

    tracks = check_records(path, data["annotations"], "annotation", TRACK_KEYS, report)
    per_class: Counter = Counter()
    annotated_frames = 0
    for track in tracks.values():
        record = f"annotation {track['id']}"
        video = referenced(path, record, track, "video", videos, categories, report)
        if video is None:
            continue
        n = len(video["file_names"])
        lengths = {k: len(track[k]) for k in ("segmentations", "bboxes", "areas")}
        if any(v != n for v in lengths.values()) or video["length"] != n:
            report.error(
                path,
                record,
                f"video {video['id']} has length {video['length']} and {n} file_names but the track has "
                + ", ".join(f"{v} {k}" for k, v in lengths.items()),
            )
            continue
        present = 0
        for i, (seg, bbox, area) in enumerate(zip(track["segmentations"], track["bboxes"], track["areas"])):
            if seg is None:
                if bbox is not None or area is not None:
                    report.error(path, f"{record} frame {i}", "segmentation is null but bbox/area are not")
                continue
            present += 1
            check_instance(path, f"{record} frame {i}", seg, bbox, area, video["width"], video["height"], report)
        if present == 0:
            report.warn(path, record, "track has no annotated frame")
        annotated_frames += present
        per_class[categories[track["category_id"]]["name"]] += 1
    stats = {
        "videos": len(videos),
        "frames": sum(len(v["file_names"]) for v in videos.values()),
        "tracks": len(tracks),
        "annotated_track_frames": annotated_frames,
        "tracks_per_class": {
            c["name"]: per_class.get(c["name"], 0) for c in sorted(categories.values(), key=lambda c: c["id"])
        },
    }
    return stats, {(str(path), vid): frames for vid, frames in frames_of.items()}


# --------------------------------------------------------------------------- the stage


def run(
    params: Params,
    report_file: Path = layout.VALIDATE_REPORT,
    coco_dir: Path = layout.COCO,
    ytvis_dir: Path = layout.YTVIS,
    progress: bool = True,
) -> dict:
    """Check both datasets and write the report (atomically, passing or not); returns it (``show`` fails the
    stage when it holds errors)."""
    params = ensure(Params, params, STAGE)
    # a report from an earlier run must not outlive a failure of this one
    Path(report_file).unlink(missing_ok=True)
    report = check_datasets(params, coco_dir, ytvis_dir, progress=progress).as_dict()
    # a failed run leaves an "ok": false report, never a stale passing one, and show()'s error stops dvc
    # before any training stage
    write_json(report_file, report)
    return {**report, "report_file": str(report_file)}


def show(summary: dict) -> None:
    """Print the report's totals, warnings and first errors; a report with errors is a UserError (exit 2)."""
    for line in summary["warnings"]:
        print(f"warning: {line}", file=sys.stderr)
    totals = summary["stats"]["totals"]
    errors = summary["errors"]
    print(
        f"{totals['images']} images, {totals['annotations']} annotations, {totals['videos']} videos, "
        f"{totals['tracks']} tracks; {len(errors)} errors, {len(summary['warnings'])} warnings "
        f"-> {summary['report_file']}"
    )
    if errors:
        for line in errors[:SHOWN_ERRORS]:
            print(f"error: {line}", file=sys.stderr)
        if len(errors) > SHOWN_ERRORS:
            print(f"... and {len(errors) - SHOWN_ERRORS} more", file=sys.stderr)
        raise UserError(f"{len(errors)} error(s) found; all are listed in the report", summary["report_file"])


def main(argv: list[str] | None = None) -> None:
    # bad params too must not leave an earlier run's passing report behind
    stage_main(STAGE, __doc__, Params, run, show, argv, on_start=lambda: layout.VALIDATE_REPORT.unlink(missing_ok=True))


def check_datasets(
    params: Params,
    coco_dir: Path = layout.COCO,
    ytvis_dir: Path = layout.YTVIS,
    workers: int = 0,
    progress: bool = True,
) -> Report:
    """Check both datasets and return the report (nothing written)."""
    params = ensure(Params, params, STAGE)
    balance_ratio, negatives_min, negatives_max = params.class_balance_ratio, params.negatives_min, params.negatives_max
    coco_dir, ytvis_dir = Path(coco_dir), Path(ytvis_dir)
    workers = parallel.resolve_workers(workers)
    report = Report()
    refs: list[ImageRef] = []
    coco_stats, ytvis_stats, video_frames = {}, {}, {}
    for split in layout.SPLITS:
        stats = check_coco_split(coco_dir / split, report, refs)
        if stats is not None:
            coco_stats[split] = stats
        stats, frames = check_ytvis_split(ytvis_dir / split, report, refs)
        if stats is not None:
            ytvis_stats[split] = stats
        video_frames.update(frames)
    sizes = check_image_refs(refs, workers, progress, report)
    for (json_path, video_id), frames in video_frames.items():
        known = [(f, sizes[f]) for f in frames if f in sizes]
        if known and any(size != known[0][1] for _, size in known):
            odd = next(f for f, size in known if size != known[0][1])
            report.error(
                json_path,
                f"video {video_id}",
                f"frame sizes differ within the video: {odd} is {sizes[odd][0]}x{sizes[odd][1]}, "
                f"{known[0][0]} is {known[0][1][0]}x{known[0][1][1]}",
            )

    # Guide: classes within class_balance_ratio of each other, 10-20% negatives. Warnings, not errors:
    # a real dataset may be imbalanced on purpose.
    totals: Counter = Counter()
    for stats in coco_stats.values():
        totals.update(stats["per_class"])
    coco_json = coco_dir / "*" / layout.COCO_ANNOTATIONS
    if totals:
        for name, count in sorted(totals.items()):
            if count == 0:
                report.warn(coco_json, f"category {name}", "no annotations in any split")
        counted = [c for c in totals.values() if c > 0]
        if counted and max(counted) > balance_ratio * min(counted):
            report.warn(
                coco_json,
                None,
                f"class imbalance: {dict(sorted(totals.items()))} (largest/smallest {max(counted) / min(counted):.2f} "
                f"> validate.class_balance_ratio {balance_ratio})",
            )
    images = sum(s["images"] for s in coco_stats.values())
    negatives = sum(s["negatives"] for s in coco_stats.values())
    share = negatives / images if images else 0.0
    if images and not negatives_min <= share <= negatives_max:
        report.warn(
            coco_json,
            None,
            f"negatives share {share:.3f} outside "
            f"[validate.negatives_min {negatives_min}, negatives_max {negatives_max}]",
        )
    for split, stats in coco_stats.items():
        if stats["images"] == 0:
            report.warn(coco_dir / split / layout.COCO_ANNOTATIONS, None, "split has no images")
    for split, stats in ytvis_stats.items():
        if stats["videos"] == 0:
            report.warn(ytvis_dir / split / layout.YTVIS_ANNOTATIONS, None, "split has no videos")

    report.stats = {
        "coco": coco_stats,
        "ytvis": ytvis_stats,
        "totals": {
            "images": images,
            "annotations": sum(s["annotations"] for s in coco_stats.values()),
            "per_class": dict(sorted(totals.items())),
            "negatives_share": round(share, 4),
            "videos": sum(s["videos"] for s in ytvis_stats.values()),
            "tracks": sum(s["tracks"] for s in ytvis_stats.values()),
        },
    }
    return report
