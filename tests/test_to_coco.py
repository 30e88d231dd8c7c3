"""to_coco on a small hand-built data/raw + data/frames (layout.py layout), in-process and as the stage CLI.

``make_project`` (tests/helpers_data.py) builds the fixture; test_to_ytvis.py and test_validate.py use it too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from factory_sam3 import layout
from factory_sam3.data import parallel
from factory_sam3.data import splits as splits_mod
from factory_sam3.errors import UserError
from factory_sam3.formats.rle import rle_area, rle_bbox, rle_to_mask
from helpers_data import STILLS, VIDEOS, H, W, box_mask, convert, load, make_project, run_stage, write_mask


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path / "proj")


# --------------------------------------------------------------------------- the stage end to end


def test_stage_cli_builds_coco_splits(project):
    result = run_stage("to_coco", project)
    assert result.returncode == 0, result.stderr
    assert "cam_broken" in result.stderr and "left out" in result.stderr

    split_of = load(project / layout.SPLITS_FILE)
    assert set(split_of) == set(VIDEOS) | set(STILLS)  # every group, skipped video excluded
    assert set(split_of.values()) <= set(layout.SPLITS)

    all_files = {}
    for split in layout.SPLITS:
        data = load(project / layout.COCO / split / layout.COCO_ANNOTATIONS)
        assert {c["name"] for c in data["categories"]} == {c["name"] for c in layout.CATEGORIES}
        ids = [im["id"] for im in data["images"]]
        assert len(ids) == len(set(ids))
        assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
        for image in data["images"]:
            path = project / layout.COCO / split / image["file_name"]
            assert path.is_file()  # beside the JSON
            assert Image.open(path).size == (image["width"], image["height"])
            all_files[image["file_name"]] = split
        images = {im["id"]: im for im in data["images"]}
        for ann in data["annotations"]:
            assert ann["iscrowd"] == 0 and ann["image_id"] in images
            rle = ann["segmentation"]
            assert isinstance(rle["counts"], str)
            assert rle["size"] == [images[ann["image_id"]]["height"], images[ann["image_id"]]["width"]]
            assert ann["bbox"] == rle_bbox(rle) and ann["area"] == rle_area(rle) > 0

    # the group decides the split: a frame of a video is in its video's split
    for file_name, split in all_files.items():
        group = next((v for v in VIDEOS if file_name.startswith(v + "_")), Path(file_name).stem)
        assert split_of[group] == split, file_name


def test_content_stills_frames_and_negatives(project):
    summary = convert(project)
    images, anns = {}, {}
    for split in layout.SPLITS:
        data = load(project / layout.COCO / split / layout.COCO_ANNOTATIONS)
        by_id = {im["id"]: im["file_name"] for im in data["images"]}
        cats = {c["id"]: c["name"] for c in data["categories"]}
        for im in data["images"]:
            images[im["file_name"]] = im
            anns.setdefault(im["file_name"], [])
        for a in data["annotations"]:
            anns[by_id[a["image_id"]]].append((cats[a["category_id"]], a))

    # stills: one image each, negatives kept, empty mask dropped
    assert {f"{s}.jpg" for s in STILLS} <= set(images)
    assert sorted(c for c, _ in anns["img_000.jpg"]) == ["gripper", "part_A"]
    assert [c for c, _ in anns["img_002.jpg"]] == [] and summary["empty_masks_dropped"] == 1
    assert anns["img_003.jpg"] == [] and anns["img_007.jpg"] == []
    gripper = dict(anns["img_000.jpg"])["gripper"]
    assert gripper["bbox"] == [2.0, 3.0, 10.0, 6.0] and gripper["area"] == 60
    assert (rle_to_mask(gripper["segmentation"]) == box_mask(2, 3, 10, 6)).all()
    assert dict(anns["img_006.jpg"])["screw"]["area"] == W * H
    assert sorted(c for c, _ in anns["img_004.jpg"]) == ["defect", "part_A"]  # image_annotations/

    # videos: annotated extracted frames are sources 0, 4, 6, 8 (5 is not extracted); every 2nd -> 0 and 6
    for video in VIDEOS:
        frames = sorted(f for f in images if f.startswith(video + "_"))
        assert frames == [f"{video}_00000.jpg", f"{video}_00003.jpg"], frames
        expected = ["gripper", "part_A" if VIDEOS.index(video) % 2 else "screw"]
        assert sorted(c for c, _ in anns[f"{video}_00000.jpg"]) == sorted(expected)
        assert anns[f"{video}_00003.jpg"] == []  # annotated frame without objects = negative
    assert sum(s["negatives"] for s in (summary[k] for k in layout.SPLITS)) == 3 + len(VIDEOS)


def test_sample_rate_one_takes_every_annotated_frame(project):
    convert(project, sample_rate=1)
    files = []
    for split in layout.SPLITS:
        files += [im["file_name"] for im in load(project / layout.COCO / split / layout.COCO_ANNOTATIONS)["images"]]
    assert sorted(f for f in files if f.startswith("cam_a_")) == [f"cam_a_{i:05d}.jpg" for i in (0, 2, 3, 4)]


def test_rerun_is_byte_identical_pool_or_not(project, monkeypatch):
    monkeypatch.setattr(parallel, "POOL_MIN_SECONDS", 0.0)  # the fixture is small: force the process pool
    pools = []
    real_pool = parallel.process_pool
    monkeypatch.setattr(parallel, "process_pool", lambda *a, **k: pools.append(a) or real_pool(*a, **k))
    convert(project, workers=2)
    assert len(pools) == 1
    first = {p.relative_to(project): p.read_bytes() for p in (project / "data" / "coco").rglob("*.json")}
    first_splits = (project / layout.SPLITS_FILE).read_bytes()
    convert(project, workers=1)
    second = {p.relative_to(project): p.read_bytes() for p in (project / "data" / "coco").rglob("*.json")}
    assert first == second and (project / layout.SPLITS_FILE).read_bytes() == first_splits


def test_images_are_hard_linked_not_copied(project):
    convert(project)
    split = load(project / layout.SPLITS_FILE)["cam_a"]
    linked = project / layout.COCO / split / "cam_a_00000.jpg"
    assert os.path.samefile(linked, project / layout.FRAMES / "cam_a" / "00000.jpg")


def test_pycocotools_and_sam3_loader_read_our_output(project):
    convert(project)
    from pycocotools.coco import COCO

    path = project / layout.COCO / "train" / layout.COCO_ANNOTATIONS
    api = COCO(str(path))
    assert len(api.getImgIds()) == len(load(path)["images"])
    for ann in api.loadAnns(api.getAnnIds()):
        mask = api.annToMask(ann)
        assert mask.sum() == ann["area"]

    loaders = pytest.importorskip("sam3.train.data.coco_json_loaders")
    dataset = loaders.COCO_FROM_JSON(str(path), include_negatives=True)
    ids = dataset.getDatapointIds()
    assert len(ids) == len(load(path)["images"])
    total = 0
    for idx in ids:
        queries, annotations = dataset.loadQueriesAndAnnotationsFromDatapoint(idx)
        assert [q["query_text"] for q in queries] == [c["name"] for c in layout.CATEGORIES]
        total += len(annotations)
        images = dataset.loadImagesFromDatapoint(idx)
        assert (path.parent / images[0]["file_name"]).is_file()
    assert total == len(load(path)["annotations"])


# --------------------------------------------------------------------------- bad input: clear error, nothing left


def _assert_failed_cleanly(result, project, *needles):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)
    assert not (project / layout.COCO).exists(), "no partial data/coco may be left"
    assert not (project / layout.SPLITS_FILE).exists()
    leftovers = [p.name for p in (project / "data").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_mask_size_mismatch_names_the_mask(project):
    write_mask(project / layout.RAW / "masks" / "img_001_defect.png", np.ones((H + 1, W), np.uint8))
    result = run_stage("to_coco", project)
    _assert_failed_cleanly(result, project, "img_001_defect.png", "mask is 48x33", "48x32")


def test_unreadable_mask_names_the_mask(project):
    (project / layout.RAW / "masks" / "img_001_part_A.png").write_bytes(b"\x89PNG not really")
    result = run_stage("to_coco", project)
    _assert_failed_cleanly(result, project, "img_001_part_A.png", "unreadable")


def test_unknown_track_category_names_file_and_track(project):
    path = project / layout.RAW / "video_annotations" / "cam_b.json"
    data = load(path)
    data["tracks"]["2"]["category"] = "forklift"
    path.write_text(json.dumps(data))
    result = run_stage("to_coco", project)
    _assert_failed_cleanly(result, project, "cam_b.json", "track 2", "unknown category 'forklift'")


def test_bad_video_segmentation_names_file_frame_and_track(project):
    path = project / layout.RAW / "video_annotations" / "cam_c.json"
    data = load(path)
    data["frames"]["0"]["1"] = {"size": [H, W], "counts": "!!!broken"}
    path.write_text(json.dumps(data))
    result = run_stage("to_coco", project)
    _assert_failed_cleanly(result, project, "cam_c.json", "frame 0 track 1", "RLE")


def test_broken_json_names_line(project):
    (project / layout.RAW / "categories.json").write_text('[{"id": 1, "name": "gripper"},')
    result = run_stage("to_coco", project)
    _assert_failed_cleanly(result, project, "categories.json", "invalid JSON at line 1")


def test_failure_removes_previous_output(project):
    convert(project)
    assert (project / layout.COCO).is_dir()
    write_mask(project / layout.RAW / "masks" / "img_001_defect.png", np.ones((H, W + 2), np.uint8))
    with pytest.raises(UserError):
        convert(project)
    assert not (project / layout.COCO).exists(), "a stale dataset must not survive a failed run"


def test_bad_params_are_user_errors(project):
    with pytest.raises(UserError, match="sample_rate"):
        convert(project, sample_rate=0)
    with pytest.raises(UserError, match="splits"):
        convert(project, splits={"train": 1.0, "holdout": 0.1})
    with pytest.raises(UserError, match="workers"):
        convert(project, workers=-1)


# --------------------------------------------------------------------------- split assignment


RATIOS = {"train": 0.7, "valid": 0.15, "test": 0.15}


def test_splits_deterministic_and_seeded():
    names = [f"video_{i}" for i in range(50)]
    a = splits_mod.assign_groups(names, RATIOS, seed=0)
    assert a == splits_mod.assign_groups(list(reversed(names)), RATIOS, seed=0)
    assert a != splits_mod.assign_groups(names, RATIOS, seed=1)
    counts = {s: list(a.values()).count(s) for s in layout.SPLITS}
    assert counts["train"] > counts["valid"] > 0 and counts["test"] > 0


def test_splits_stable_when_groups_are_added():
    base = [f"video_{i}" for i in range(40)]
    before = splits_mod.assign_groups(base, RATIOS, seed=3)
    after = splits_mod.assign_groups(base + [f"new_{i}" for i in range(20)], RATIOS, seed=3)
    assert {g: after[g] for g in base} == before


@pytest.mark.parametrize("n", [3, 4, 5, 7])
def test_every_split_non_empty_from_three_groups(n):
    for seed in range(20):
        result = splits_mod.assign_groups([f"g{i}" for i in range(n)], RATIOS, seed=seed)
        assert set(result.values()) == set(layout.SPLITS), (n, seed, result)


def test_fixed_splits_win_and_groups_stay_together():
    stills = [f"img_{i}" for i in range(30)]
    groups = {s: f"session_{i % 3}" for i, s in enumerate(stills)}
    fixed = {"img_0": "test", "video_x": "valid"}
    result = splits_mod.assign_splits(["video_x", "video_y", "video_z"], stills, RATIOS, 0, groups, fixed)
    assert result["video_x"] == "valid"
    for session in range(3):
        members = {result[s] for s, g in groups.items() if g == f"session_{session}"}
        assert len(members) == 1
    assert result["img_3"] == "test"  # same session as the fixed img_0
    with pytest.raises(UserError, match="different splits"):
        splits_mod.assign_splits([], stills, RATIOS, 0, groups, {"img_0": "test", "img_3": "train"})
    with pytest.raises(UserError, match="split must be one of"):
        splits_mod.assign_splits(["v"], [], RATIOS, 0, {}, {"v": "holdout"})


def test_zero_ratio_split_stays_empty():
    result = splits_mod.assign_groups([f"g{i}" for i in range(10)], {"train": 0.8, "valid": 0.2, "test": 0}, seed=0)
    assert "test" not in result.values() and "valid" in result.values()
