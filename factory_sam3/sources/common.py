"""Small helpers shared by the fetch sources: categories, names, images. (JSON: ``factory_sam3.io``; the sources
write with ``atomic=False`` because the whole output folder is renamed into place at the end.)"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from factory_sam3.errors import UserError


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
