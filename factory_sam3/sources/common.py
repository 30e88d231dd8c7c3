"""Small helpers shared by the fetch sources: JSON written the same way every time, categories, names."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Iterable

from factory_sam3.errors import UserError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def dump_json(path: Path, data: Any, indent: int | None = None) -> None:
    """Sorted keys, no timestamps: the same data gives the same bytes on any machine. (The whole output
    folder is renamed into place at the end, so a per-file atomic rename is not needed here.)"""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        # dumps, not dump: only the one-shot encoder runs in C (dump iterates in Python, ~10x slower)
        handle.write(json.dumps(data, indent=indent, sort_keys=True, separators=(",", ":") if indent is None else None))
        handle.write("\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("file not found", path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"not valid JSON ({err})", path) from None


def check_categories(categories: Any, file: object) -> list[dict]:
    """A list of ``{"id": int, "name": str, "supercategory": str}`` with unique ids and names."""
    if not isinstance(categories, list) or not categories:
        raise UserError('must be a non-empty list like [{"id": 1, "name": "gripper", "supercategory": "tool"}]', file)
    ids, names, out = set(), set(), []
    for i, cat in enumerate(categories):
        record = f"category {i}"
        if not isinstance(cat, dict) or not isinstance(cat.get("name"), str) or not cat["name"]:
            raise UserError("needs a non-empty string 'name'", file, record)
        if not isinstance(cat.get("id"), int) or isinstance(cat.get("id"), bool):
            raise UserError("needs an integer 'id'", file, record)
        if cat["id"] in ids:
            raise UserError(f"duplicate category id {cat['id']}", file, record)
        if cat["name"] in names:
            raise UserError(f"duplicate category name '{cat['name']}'", file, record)
        ids.add(cat["id"])
        names.add(cat["name"])
        out.append({"id": cat["id"], "name": cat["name"], "supercategory": str(cat.get("supercategory") or "object")})
    return out


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """A file-system and URL friendly version of a video/image name (keeps it readable)."""
    cleaned = _UNSAFE.sub("_", name).strip("._")
    return cleaned or "unnamed"


def numbered_categories(names: Iterable[str], supercategory: str = "object") -> list[dict]:
    return [{"id": i, "name": name, "supercategory": supercategory} for i, name in enumerate(names, start=1)]


def copy_as_jpeg(src: Path, dst: Path) -> None:
    """Copy a JPEG as is; re-encode any other image format to JPEG (quality 95), the raw layout's format."""
    if src.suffix.lower() in (".jpg", ".jpeg"):
        shutil.copyfile(src, dst)
        return
    import cv2  # only sources with non-JPEG images need OpenCV here

    image = cv2.imread(str(src), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError("image cannot be read", src)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise UserError("image cannot be re-encoded as JPEG", src)
    dst.write_bytes(buf.tobytes())
