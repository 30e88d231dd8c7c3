"""Your own factory data, already in the raw layout (``factory_sam3.layout``), from a folder or .zip.

Expected (any of the data folders; ``categories.json`` always)::

    categories.json                  [{"id": 1, "name": "gripper", "supercategory": "tool"}, ...]
    images/<image>.jpg  +  masks/<image>_<class>.png        (the guide's Script 1 layout)
                        or image_annotations/<image>.json   (instance-level)
    videos/<video>.mp4 or frame_folders/<video>/*.jpg  +  video_annotations/<video>.json (keyframes are fine)
    groups.json, splits.json         (optional)

The basics are checked here (files present, names matching, JSON readable, classes known) so a mistake
surfaces at fetch with the file named; ``validate`` checks the converted datasets in depth later.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from factory_sam3.errors import UserError
from factory_sam3.io import read_json, write_json
from factory_sam3.layout import IMAGE_EXTENSIONS, SPLITS, VIDEO_EXTENSIONS
from factory_sam3.sources.archive import find_root, local_input
from factory_sam3.sources.common import check_categories, copy_as_jpeg

DATA_DIRS = ("videos", "frame_folders", "images")
ALL_DIRS = DATA_DIRS + ("video_annotations", "masks", "image_annotations")


def _is_root(path: Path) -> bool:
    return (path / "categories.json").is_file() or any((path / d).is_dir() for d in DATA_DIRS)


def _files(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in extensions)


def _check_video_annotation(path: Path, data: Any, names: set[str], videos: set[str]) -> None:
    if not isinstance(data, dict):
        raise UserError("must be a JSON object with 'tracks' and 'frames'", path)
    if path.stem not in videos:
        raise UserError(f"no video '{path.stem}' in videos/ or frame_folders/ for this annotation", path)
    tracks, frames = data.get("tracks"), data.get("frames")
    if not isinstance(tracks, dict) or not isinstance(frames, dict):
        raise UserError("needs 'tracks' {id: {category}} and 'frames' {frame index: {track id: mask}}", path)
    for tid, track in tracks.items():
        category = track.get("category") if isinstance(track, dict) else None
        if category not in names:
            raise UserError(f"unknown category {category!r} (not in categories.json)", path, f"track {tid}")
    for index, objects in frames.items():
        if not str(index).isdigit():
            raise UserError(f"frame key {index!r} must be a frame index (0, 1, ...)", path)
        if not isinstance(objects, dict):
            raise UserError("must map track ids to masks ({} for a frame with no target)", path, f"frame {index}")
        for tid in objects:
            if tid not in tracks:
                raise UserError(f"track {tid} is not declared in 'tracks'", path, f"frame {index}")


def _mask_owner(mask: Path, images: set[str], names_longest_first: list[str]) -> tuple[str, str]:
    for name in names_longest_first:
        suffix = f"_{name}"
        if mask.stem.endswith(suffix) and mask.stem[: -len(suffix)] in images:
            return mask.stem[: -len(suffix)], name
    raise UserError(
        "mask name must be <image>_<class>.png with an image in images/ and a class from categories.json", mask
    )


def check_layout(root: Path) -> list[dict]:
    """Check the basics of a raw-layout folder; returns its categories."""
    categories_path = root / "categories.json"
    if not categories_path.is_file():
        raise UserError(
            'categories.json is missing; list your classes as [{"id": 1, "name": "part_A", '
            '"supercategory": "part"}, ...]',
            categories_path,
        )
    categories = check_categories(read_json(categories_path), categories_path)
    names = {c["name"] for c in categories}

    videos = {p.stem for p in _files(root / "videos", VIDEO_EXTENSIONS)}
    folders_dir = root / "frame_folders"
    folders = {p.name for p in folders_dir.iterdir() if p.is_dir()} if folders_dir.is_dir() else set()
    images = {p.stem for p in _files(root / "images", IMAGE_EXTENSIONS)}
    if not (videos or folders or images):
        raise UserError("no data: expected videos/*.mp4, frame_folders/<video>/*.jpg or images/*.jpg", root)
    for ann in _files(root / "video_annotations", (".json",)):
        _check_video_annotation(ann, read_json(ann), names, videos | folders)
    longest_first = sorted(names, key=len, reverse=True)
    for mask in _files(root / "masks", (".png",)):
        _mask_owner(mask, images, longest_first)
    for ann in _files(root / "image_annotations", (".json",)):
        if ann.stem not in images:
            raise UserError(f"no image '{ann.stem}' in images/ for this annotation", ann)
        data = read_json(ann)
        instances = data.get("instances") if isinstance(data, dict) else None
        if not isinstance(instances, list):
            raise UserError("needs 'width', 'height' and an 'instances' list", ann)
        for i, inst in enumerate(instances):
            if not isinstance(inst, dict) or inst.get("category") not in names:
                raise UserError(
                    f"unknown category {inst.get('category') if isinstance(inst, dict) else inst!r}",
                    ann,
                    f"instance {i}",
                )
    for optional in ("groups.json", "splits.json"):
        path = root / optional
        if path.is_file():
            data = read_json(path)
            if not isinstance(data, dict):
                raise UserError('must map names to values, e.g. {"cam1_0001": "cam1"}', path)
            if optional == "splits.json":
                bad = {k: v for k, v in data.items() if v not in SPLITS}
                if bad:
                    name, value = next(iter(bad.items()))
                    raise UserError(f"split {value!r} is not one of {list(SPLITS)}", path, name)
    return categories


def copy_layout(root: Path, out: Path) -> dict:
    categories = check_layout(root)
    write_json(out / "categories.json", categories, indent=2, atomic=False)
    counts = {}
    for name in ALL_DIRS:
        src = root / name
        if not src.is_dir():
            continue
        if name == "images":
            (out / name).mkdir()
            for image in _files(src, IMAGE_EXTENSIONS):
                copy_as_jpeg(image, out / name / f"{image.stem}.jpg")
        else:
            shutil.copytree(src, out / name, ignore=shutil.ignore_patterns(".*"))
        counts[name] = sum(1 for _ in (out / name).iterdir())
    for optional in ("groups.json", "splits.json"):
        if (root / optional).is_file():
            shutil.copyfile(root / optional, out / optional)
    return counts


def fetch_local(path: Any, out: Path) -> dict:
    with local_input(path, "data in the raw layout (categories.json + images/, videos/ ...)") as folder:
        root = find_root(folder, _is_root)
        if root is None:
            raise UserError(
                "no data in the raw layout found (categories.json with images/, videos/ or frame_folders/)", path
            )
        return copy_layout(root, out)


def fetch(params, out: Path) -> dict:
    counts = fetch_local(params.path, out)
    return {"source": "folder", "path": str(params.path), "counts": counts}
