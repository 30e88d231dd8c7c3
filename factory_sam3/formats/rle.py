"""Binary masks <-> COCO run-length encoding (RLE), via pycocotools.

Every mask is encoded ONCE; its bbox and area come from that same compressed RLE (pycocotools computes both
from the runs without decoding), so bbox, area and segmentation can never disagree. RLEs returned here are
JSON-safe: ``{"size": [H, W], "counts": str}``.

Accepted segmentation inputs (``to_rle``): compressed RLE (counts str or bytes), uncompressed RLE (counts a
list of ints, column-major runs as COCO defines them) and polygons (a list of flat ``[x1, y1, x2, y2, ...]``
lists; several polygons of one object are merged into one RLE).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


class SegmentationError(ValueError):
    """A segmentation that cannot be turned into an RLE of the expected size (callers add file/record)."""


def _json_safe(rle: dict) -> dict:
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts}


def _native(rle: dict) -> dict:
    """The form pycocotools' C functions take: counts as bytes."""
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts}


def _column_major(mask01: np.ndarray) -> np.ndarray:
    """A column-major (Fortran) copy of a C-ordered uint8 0/1 mask, as pycocotools' encoder needs.

    cv2.transpose writes the transposed pixels with SIMD; its ``.T`` is the same mask in column-major order
    (about 2x faster than ``np.asfortranarray``)."""
    import cv2  # here, not at the top: validate and to_ytvis never need OpenCV, and it costs 0.2 s to import

    return cv2.transpose(np.ascontiguousarray(mask01)).T


def mask_to_rle(mask: np.ndarray) -> dict:
    """Encode a 2-D binary mask (bool or integers; anything non-zero is object) as compressed RLE."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0:
        raise SegmentationError(f"mask must be a non-empty 2-D array, got shape {mask.shape}")
    mask01 = mask.view(np.uint8) if mask.dtype == np.bool_ else (mask != 0).view(np.uint8)
    return _json_safe(mask_utils.encode(_column_major(mask01)))


def encode_mask01(mask01: np.ndarray) -> tuple[dict, list[float], int]:
    """``(rle, bbox, area)`` of a uint8 mask that already holds only 0 and 1 (as read_mask_file returns);
    skips the normalising pass of mask_to_rle. Values other than 0/1 would corrupt the runs."""
    native = mask_utils.encode(_column_major(mask01))
    return _json_safe(native), [float(v) for v in mask_utils.toBbox(native)], int(mask_utils.area(native))


def read_mask_file(path: str | os.PathLike, threshold: int = 127) -> np.ndarray | None:
    """A mask image as a C-ordered uint8 0/1 array (pixel > threshold is object, like the guide's Script 1),
    or None if the file cannot be decoded. Colour or palette PNGs are converted to grey first."""
    import cv2

    gray = cv2.imread(os.fspath(path), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        return None
    return cv2.threshold(gray, threshold, 1, cv2.THRESH_BINARY)[1]


def rle_to_mask(rle: dict) -> np.ndarray:
    """Decode a compressed or uncompressed RLE into an ``(H, W)`` uint8 mask of 0/1."""
    rle = normalize_rle(rle)
    return mask_utils.decode(_native(rle))


def rle_area(rle: dict) -> int:
    return int(mask_utils.area(_native(rle)))


def rle_bbox(rle: dict) -> list[float]:
    """``[x, y, w, h]`` of the mask's tight box (COCO convention; all zeros for an empty mask)."""
    return [float(v) for v in mask_utils.toBbox(_native(rle))]


def encode_mask(mask: np.ndarray) -> tuple[dict, list[float], int]:
    """``(rle, bbox, area)`` of a binary mask from a single encoding."""
    return rle_with_box(mask_to_rle(mask))


def rle_with_box(rle: dict) -> tuple[dict, list[float], int]:
    """``(rle, bbox, area)`` of an already-encoded RLE (bbox and area from its runs, no decode)."""
    native = _native(rle)
    return _json_safe(native), [float(v) for v in mask_utils.toBbox(native)], int(mask_utils.area(native))


def polygons_to_rle(polygons: list, height: int, width: int) -> dict:
    """Rasterise COCO polygons (list of flat coordinate lists) into one compressed RLE."""
    if not isinstance(polygons, list) or not polygons:
        raise SegmentationError("polygon segmentation must be a non-empty list of coordinate lists")
    cleaned = []
    for i, poly in enumerate(polygons):
        if not isinstance(poly, (list, tuple)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in poly
        ):
            raise SegmentationError(f"polygon {i} is not a flat list of numbers")
        if len(poly) < 6 or len(poly) % 2:
            raise SegmentationError(f"polygon {i} needs an even number (>= 6) of coordinates, got {len(poly)}")
        cleaned.append([float(v) for v in poly])
    rles = mask_utils.frPyObjects(cleaned, int(height), int(width))
    return _json_safe(mask_utils.merge(rles))


def uncompressed_to_rle(rle: dict) -> dict:
    """Compress an RLE whose counts are a list of run lengths."""
    height, width = _size(rle)
    counts = rle["counts"]
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        raise SegmentationError("uncompressed RLE counts must be non-negative integers")
    if sum(counts) != height * width:
        raise SegmentationError(
            f"uncompressed RLE covers {sum(counts)} pixels, size {height}x{width} needs {height * width}"
        )
    return _json_safe(mask_utils.frPyObjects({"size": [height, width], "counts": list(counts)}, height, width))


def _size(rle: dict) -> tuple[int, int]:
    size = rle.get("size")
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise SegmentationError(f"RLE 'size' must be [height, width] of positive integers, got {size!r}")
    return int(size[0]), int(size[1])


def normalize_rle(rle: Any) -> dict:
    """Check an RLE dict and return it compressed and JSON-safe; decodes nothing."""
    if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
        raise SegmentationError("RLE must be a dict with 'size' and 'counts'")
    height, width = _size(rle)
    counts = rle["counts"]
    if isinstance(counts, list):
        return uncompressed_to_rle(rle)
    if not isinstance(counts, (str, bytes)):
        raise SegmentationError(f"RLE 'counts' must be a string or a list, got {type(counts).__name__}")
    try:
        raw = counts.encode("ascii") if isinstance(counts, str) else counts
        # pycocotools trusts its input; decode the runs here so a corrupt string is caught, not mis-read
        total = _compressed_total(raw)
    except (UnicodeEncodeError, ValueError) as err:
        raise SegmentationError(f"RLE counts cannot be decoded ({err})") from None
    if total != height * width:
        raise SegmentationError(f"RLE counts cover {total} pixels, size {height}x{width} needs {height * width}")
    return {"size": [height, width], "counts": raw.decode("ascii")}


def _compressed_total(counts: bytes) -> int:
    """Sum of the run lengths in a COCO compressed counts string (the LEB128-like code of maskApi.c)."""
    total = 0
    runs = []
    pos = 0
    n = len(counts)
    while pos < n:
        value = 0
        shift = 0
        while True:
            if pos >= n:
                raise ValueError("truncated run")
            c = counts[pos] - 48
            if c < 0 or c > 63:
                raise ValueError(f"byte {counts[pos]!r} outside the RLE alphabet")
            value |= (c & 0x1F) << (5 * shift)
            more = c & 0x20
            pos += 1
            shift += 1
            if not more:
                if c & 0x10:
                    value |= -1 << (5 * shift)
                break
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise ValueError("negative run length")
        runs.append(value)
        total += value
    return total


def to_rle(segmentation: Any, height: int, width: int) -> dict:
    """Any COCO segmentation (RLE or polygons) -> compressed JSON-safe RLE of size ``height x width``."""
    if isinstance(segmentation, dict):
        rle = normalize_rle(segmentation)
    elif isinstance(segmentation, list):
        rle = polygons_to_rle(segmentation, height, width)
    else:
        raise SegmentationError(
            f"segmentation must be an RLE dict or a polygon list, got {type(segmentation).__name__}"
        )
    if rle["size"] != [int(height), int(width)]:
        raise SegmentationError(f"RLE size {rle['size']} differs from the image size [{height}, {width}]")
    return rle
