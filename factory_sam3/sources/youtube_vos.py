"""YouTube-VOS -> data/raw (frame_folders/, video_annotations/, categories.json).

Input (folder or .zip; the split folder itself or its parent holding ``train/``)::

    JPEGImages/<video>/00000.jpg ...
    Annotations/<video>/00000.png ...   palette PNGs: pixel value = object id, 0 = background
    meta.json   {"videos": {"<video>": {"objects": {"<id>": {"category": "...", "frames": [...]}}}}}

Frames are copied as they are (names kept, sorted); annotation frame indices point into that sorted list.
Only frames with an annotation PNG appear in the video annotation (sparse, as YouTube-VOS ships them).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from factory_sam3.errors import UserError
from factory_sam3.formats.rle import mask_to_rle
from factory_sam3.io import read_json, write_json
from factory_sam3.sources.archive import find_root, local_input
from factory_sam3.sources.common import numbered_categories, safe_name

FRAME_EXTENSIONS = (".jpg", ".jpeg")


def _is_root(path: Path) -> bool:
    return (path / "JPEGImages").is_dir() or (path / "train" / "JPEGImages").is_dir()


def _read_meta(root: Path) -> dict:
    meta_path = root / "meta.json"
    if not meta_path.is_file():
        raise UserError("meta.json not found (YouTube-VOS needs it for object categories)", meta_path)
    meta = read_json(meta_path)
    videos = meta.get("videos") if isinstance(meta, dict) else None
    if not isinstance(videos, dict):
        raise UserError("needs a 'videos' mapping", meta_path)
    for name, video in videos.items():
        objects = video.get("objects") if isinstance(video, dict) else None
        if not isinstance(objects, dict):
            raise UserError("needs an 'objects' mapping", meta_path, f"video {name}")
        for oid, obj in objects.items():
            if not str(oid).isdigit() or not 0 < int(oid) < 256:
                raise UserError(f"object id {oid!r} is not a palette index 1..255", meta_path, f"video {name}")
            if not isinstance(obj, dict) or not isinstance(obj.get("category"), str):
                raise UserError("object needs a 'category' string", meta_path, f"video {name}: object {oid}")
    return videos


def _load_index_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L"):
                raise UserError(f"expected a palette (or grey) PNG of object ids, got mode {img.mode}", path)
            return np.array(img)
    except OSError as err:
        raise UserError(f"annotation PNG cannot be read ({err})", path) from None


def convert(root: Path, out: Path) -> dict:
    meta = _read_meta(root)
    videos = sorted(p for p in (root / "JPEGImages").iterdir() if p.is_dir())
    if not videos:
        raise UserError("no video folders", root / "JPEGImages")
    names = sorted({obj["category"] for v in videos if v.name in meta for obj in meta[v.name]["objects"].values()})
    if not names:
        raise UserError("no objects in meta.json for the videos present", root / "meta.json")
    write_json(out / "categories.json", numbered_categories(names), indent=2, atomic=False)
    annotated = 0
    for video_dir in tqdm(videos, desc="fetch: youtube_vos", unit="video"):
        video = video_dir.name
        if video not in meta:
            raise UserError(f"video '{video}' has frames but no entry in meta.json", root / "meta.json")
        frames = sorted(p for p in video_dir.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS)
        if not frames:
            raise UserError("no .jpg frames", video_dir)
        name = safe_name(video)
        target = out / "frame_folders" / name
        target.mkdir(parents=True)
        for frame in frames:
            shutil.copyfile(frame, target / frame.name)
        try:
            with Image.open(frames[0]) as first:
                width, height = first.size
        except OSError as err:
            raise UserError(f"frame cannot be read ({err})", frames[0]) from None
        index_of = {p.stem: i for i, p in enumerate(frames)}
        objects = meta[video]["objects"]
        per_frame: dict[str, dict] = {}
        ann_dir = root / "Annotations" / video
        for png in sorted(ann_dir.glob("*.png")) if ann_dir.is_dir() else []:
            if png.stem not in index_of:
                raise UserError(f"annotation has no matching frame {png.stem}.jpg", png)
            ids = _load_index_png(png)
            if ids.shape != (height, width):
                raise UserError(f"annotation is {ids.shape[1]}x{ids.shape[0]} but the frames are {width}x{height}", png)
            present = {int(v) for v in np.unique(ids)} - {0}
            unknown = sorted(present - {int(k) for k in objects})
            if unknown:
                raise UserError(f"object id(s) {unknown} are not listed for this video in meta.json", png)
            per_frame[str(index_of[png.stem])] = {str(oid): mask_to_rle(ids == oid) for oid in sorted(present)}
            annotated += 1
        write_json(
            out / "video_annotations" / f"{name}.json",
            {
                "video": name,
                "width": width,
                "height": height,
                "num_frames": len(frames),
                "tracks": {str(int(oid)): {"category": obj["category"]} for oid, obj in objects.items()},
                "frames": per_frame,
            },
            indent=None,
            atomic=False,
        )
    return {"videos": len(videos), "annotated_frames": annotated, "categories": len(names)}


def fetch(params, out: Path) -> dict:
    path = params.path
    with local_input(path, "YouTube-VOS data (JPEGImages/, Annotations/, meta.json)") as folder:
        root = find_root(folder, _is_root)
        if root is None:
            raise UserError("no YouTube-VOS layout found (expected JPEGImages/, Annotations/ and meta.json)", path)
        if not (root / "JPEGImages").is_dir():
            root = root / "train"
        stats = convert(root, out)
    return {"source": "youtube_vos", "path": str(path), **stats}
