"""Readers of data/raw and data/frames (the layouts in ``factory_sam3.layout``), shared by to_coco and to_ytvis.

Each checks the shape of what it reads and turns a problem into a UserError naming the file and the record.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from factory_sam3 import layout
from factory_sam3.errors import UserError, warn
from factory_sam3.io import read_json

IMAGE_EXTENSIONS = layout.IMAGE_EXTENSIONS + (".tif", ".tiff")  # still images


def load_categories(raw: Path) -> list[dict]:
    path = raw / layout.RAW_CATEGORIES
    data = read_json(path)
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
    images_dir = raw / layout.RAW_IMAGES
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


def index_masks(
    masks_dir: Path, stills: Iterable[str], category_names: Iterable[str]
) -> dict[str, list[tuple[str, Path]]]:
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


def read_fixed_splits(raw: Path) -> tuple[dict[str, str], dict[str, str]]:
    """``(still image -> group, name -> split)`` from raw/groups.json and raw/splits.json (both optional)."""
    groups, fixed = {}, {}
    for name, target in ((layout.RAW_GROUPS, groups), (layout.RAW_SPLITS, fixed)):
        path = raw / name
        if path.is_file():
            data = read_json(path)
            if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
                raise UserError("must map names to strings", path)
            target.update(data)
    return groups, fixed


def load_manifest(frames: Path) -> dict[str, dict]:
    path = frames / layout.FRAMES_MANIFEST
    data = read_json(path)
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


def video_annotations_path(raw: Path, video: str) -> Path:
    return raw / layout.RAW_VIDEO_ANNOTATIONS / f"{video}.json"


def load_video_annotations(raw: Path, video: str) -> dict | None:
    """raw/video_annotations/<video>.json checked for shape, or None when the video has no annotations."""
    path = video_annotations_path(raw, video)
    if not path.is_file():
        return None
    data = read_json(path)
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
            raise UserError(
                "frame keys must be source frame indices mapping track ids to masks", path, f"frame {frame}"
            )
        for track_id in instances:
            if track_id not in data["tracks"]:
                raise UserError(f"track {track_id} is not declared in 'tracks'", path, f"frame {frame}")
    return data


def track_sort_key(track_id: str) -> tuple:
    return (0, int(track_id), "") if str(track_id).isdigit() else (1, 0, str(track_id))


def image_size(path: str) -> tuple[int, int]:
    """(width, height) from the image header (no pixel decode; validate decodes every image)."""
    try:
        with Image.open(path) as img:
            return img.size
    except FileNotFoundError:
        raise UserError("image not found", path) from None
    except (OSError, SyntaxError) as err:
        raise UserError(f"unreadable image ({err})", path) from None
