"""formats.rle: mask -> RLE -> mask is exact; bbox and area agree with the pixels; every input form."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from factory_sam3.formats import coco, ytvis
from factory_sam3.formats.rle import (
    SegmentationError,
    encode_mask,
    mask_to_rle,
    normalize_rle,
    polygons_to_rle,
    read_mask_file,
    rle_area,
    rle_bbox,
    rle_to_mask,
    to_rle,
    uncompressed_to_rle,
)


def numpy_bbox(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def column_major_runs(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE, written independently of pycocotools."""
    flat = mask.flatten(order="F").astype(np.uint8)
    runs, current, length = [], 0, 0
    for value in flat:
        if value != current:
            runs.append(length)
            current, length = value, 0
        length += 1
    runs.append(length)
    return runs


@pytest.mark.parametrize("seed", range(25))
def test_random_masks_round_trip_exactly(seed):
    rng = np.random.default_rng(seed)
    height, width = rng.integers(1, 90, size=2)
    density = rng.choice([0.01, 0.3, 0.5, 0.95])
    mask = rng.random((height, width)) < density
    rle, bbox, area = encode_mask(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [int(height), int(width)]
    json.dumps(rle)  # JSON-safe
    assert np.array_equal(rle_to_mask(rle), mask.astype(np.uint8))
    assert area == int(mask.sum()) == rle_area(rle)
    assert bbox == numpy_bbox(mask) == rle_bbox(rle)


@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.int32, np.float32])
def test_any_nonzero_dtype_is_object(dtype):
    mask = np.zeros((7, 9), dtype)
    mask[2:5, 3:8] = 255 if dtype != np.bool_ else True
    assert np.array_equal(rle_to_mask(mask_to_rle(mask)), (mask != 0).astype(np.uint8))


def test_non_contiguous_and_fortran_inputs():
    base = np.random.default_rng(1).random((40, 60)) < 0.4
    for view in (base[::2, ::3], np.asfortranarray(base), base.T):
        assert np.array_equal(rle_to_mask(mask_to_rle(view)), view.astype(np.uint8))


def test_empty_and_full_masks():
    empty = np.zeros((20, 30), bool)
    rle, bbox, area = encode_mask(empty)
    assert area == 0 and bbox == [0.0, 0.0, 0.0, 0.0] and not rle_to_mask(rle).any()
    full = np.ones((20, 30), bool)
    rle, bbox, area = encode_mask(full)
    assert area == 600 and bbox == [0.0, 0.0, 30.0, 20.0] and rle_to_mask(rle).all()


def test_rejects_non_2d_masks():
    with pytest.raises(SegmentationError):
        mask_to_rle(np.zeros((2, 3, 4), bool))
    with pytest.raises(SegmentationError):
        mask_to_rle(np.zeros((0, 3), bool))


def test_polygon_to_rle_matches_the_rectangle():
    # pycocotools rasterises a polygon's boundary inclusive on one side: x 4..20, y 4..16 -> 16x12 pixels
    rle = polygons_to_rle([[4, 4, 20, 4, 20, 16, 4, 16]], 32, 48)
    mask = rle_to_mask(rle)
    assert rle["size"] == [32, 48] and rle_area(rle) == int(mask.sum()) > 0
    assert rle_bbox(rle) == numpy_bbox(mask)
    ys, xs = np.nonzero(mask)
    assert 3 <= xs.min() <= 5 and 19 <= xs.max() <= 21 and 3 <= ys.min() <= 5 and 15 <= ys.max() <= 17


def test_several_polygons_merge_into_one_object():
    left = polygons_to_rle([[0, 0, 5, 0, 5, 5, 0, 5]], 20, 20)
    right = polygons_to_rle([[10, 10, 15, 10, 15, 15, 10, 15]], 20, 20)
    both = polygons_to_rle([[0, 0, 5, 0, 5, 5, 0, 5], [10, 10, 15, 10, 15, 15, 10, 15]], 20, 20)
    assert np.array_equal(rle_to_mask(both), rle_to_mask(left) | rle_to_mask(right))
    assert to_rle([[0, 0, 5, 0, 5, 5, 0, 5]], 20, 20) == left


@pytest.mark.parametrize("bad", [[], [[1, 2, 3, 4]], [[1, 2, 3, 4, 5]], [["a", 1, 2, 3, 4, 5]], [1, 2, 3]])
def test_bad_polygons_raise(bad):
    with pytest.raises(SegmentationError):
        polygons_to_rle(bad, 10, 10)


def test_uncompressed_rle_compresses_exactly():
    mask = np.random.default_rng(5).random((23, 31)) < 0.5
    counts = column_major_runs(mask)
    rle = uncompressed_to_rle({"size": [23, 31], "counts": counts})
    assert isinstance(rle["counts"], str)
    assert rle == mask_to_rle(mask)
    assert np.array_equal(rle_to_mask({"size": [23, 31], "counts": counts}), mask.astype(np.uint8))
    with pytest.raises(SegmentationError, match="covers"):
        uncompressed_to_rle({"size": [23, 31], "counts": counts[:-1]})


def test_bytes_counts_are_made_json_safe():
    rle = mask_to_rle(np.eye(6, dtype=bool))
    as_bytes = {"size": rle["size"], "counts": rle["counts"].encode()}
    assert normalize_rle(as_bytes) == rle


@pytest.mark.parametrize(
    "bad",
    [
        {"size": [10, 10], "counts": "!!!"},  # outside the RLE alphabet
        {"size": [10, 10], "counts": "52"},  # covers 5 + 2 pixels, not 100
        {"size": [10], "counts": "0"},
        {"size": [10, -1], "counts": "0"},
        {"counts": "0"},
        {"size": [10, 10], "counts": 7},
        "not a segmentation",
    ],
)
def test_corrupt_rle_is_caught_before_pycocotools(bad):
    with pytest.raises(SegmentationError):
        to_rle(bad, 10, 10)


def test_to_rle_checks_the_image_size():
    rle = mask_to_rle(np.ones((10, 12), bool))
    assert to_rle(rle, 10, 12) == rle
    with pytest.raises(SegmentationError, match="differs from the image size"):
        to_rle(rle, 12, 10)


def test_read_mask_file_thresholds_like_the_guide(tmp_path):
    gray = np.array([[0, 127, 128, 255]], np.uint8).repeat(3, axis=0)
    Image.fromarray(gray, mode="L").save(tmp_path / "m.png")
    assert read_mask_file(tmp_path / "m.png").tolist() == [[0, 0, 1, 1]] * 3
    rgb = np.stack([gray] * 3, axis=-1)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "rgb.png")
    assert read_mask_file(tmp_path / "rgb.png").tolist() == [[0, 0, 1, 1]] * 3
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert read_mask_file(tmp_path / "broken.png") is None
    assert read_mask_file(tmp_path / "missing.png") is None


def test_record_builders_and_round_trip(tmp_path):
    rle, bbox, area = encode_mask(np.pad(np.ones((3, 4), bool), 2))
    data = coco.dataset(
        [coco.image_record(1, "a.jpg", 8, 7)],
        [coco.annotation_record(1, 1, 2, rle, bbox, area)],
        [{"id": 2, "name": "x"}],
    )
    coco.write(tmp_path / "c.json", data)
    assert coco.read(tmp_path / "c.json") == data
    assert data["annotations"][0]["iscrowd"] == 0 and data["annotations"][0]["area"] == 12

    video = ytvis.video_record(1, ["v/00000.jpg", "v/00001.jpg"], 8, 7)
    assert video["length"] == 2
    track = ytvis.track_record(1, 1, 2, [rle, None], [bbox, None], [area, None])
    ytvis.write(tmp_path / "y.json", ytvis.dataset([video], [track], [{"id": 2, "name": "x"}]))
    assert "null" in (tmp_path / "y.json").read_text()
    assert ytvis.read(tmp_path / "y.json")["annotations"][0]["segmentations"][1] is None
    with pytest.raises(ValueError):
        ytvis.track_record(1, 1, 2, [rle], [bbox, None], [area])
