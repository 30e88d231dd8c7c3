"""to_ytvis on the to_coco fixture: per-frame lists with nulls, splits shared with to_coco, bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from factory_sam3 import layout
from factory_sam3.data import to_ytvis
from factory_sam3.errors import UserError
from factory_sam3.formats.rle import rle_area, rle_bbox, rle_to_mask
from helpers_data import (  # the shared fixture builder
    PARAMS,
    SOURCE_INDICES,
    VIDEOS,
    H,
    W,
    box_mask,
    convert,
    load,
    make_project,
    run_stage,
    write_jpeg,
)


@pytest.fixture
def project(tmp_path):
    root = make_project(tmp_path / "proj")
    convert(root)  # to_coco writes data/splits.json
    return root


def build(root, **overrides):
    return to_ytvis.run(
        {**PARAMS["to_ytvis"], **overrides},
        raw=root / layout.RAW,
        frames=root / layout.FRAMES,
        splits_file=root / layout.SPLITS_FILE,
        out=root / layout.YTVIS,
        progress=False,
    )


def all_splits(root):
    return {split: load(root / layout.YTVIS / split / layout.YTVIS_ANNOTATIONS) for split in layout.SPLITS}


def test_stage_cli_and_splits_consistent_with_to_coco(project):
    result = run_stage("to_ytvis", project)
    assert result.returncode == 0, result.stderr
    assert "cam_broken" in result.stderr  # skipped by extract_frames: left out with a warning

    split_of = load(project / layout.SPLITS_FILE)
    seen = {}
    for split, data in all_splits(project).items():
        for video in data["videos"]:
            name = video["file_names"][0].split("/")[0]
            assert name not in seen, f"{name} in {seen.get(name)} and {split}"
            seen[name] = split
            assert split_of[name] == split  # same split as its frames in the COCO dataset
            coco = load(project / layout.COCO / split / layout.COCO_ANNOTATIONS)
            assert any(im["file_name"].startswith(name + "_") for im in coco["images"])
            for other in set(layout.SPLITS) - {split}:
                other_coco = load(project / layout.COCO / other / layout.COCO_ANNOTATIONS)
                assert not any(im["file_name"].startswith(name + "_") for im in other_coco["images"])
    assert set(seen) == set(VIDEOS)  # the skipped video is left out
    assert len(set(seen.values())) == 3  # 5 videos: every split has one


def test_per_frame_lists_with_nulls(project):
    build(project)
    for split, data in all_splits(project).items():
        cats = {c["id"]: c["name"] for c in data["categories"]}
        videos = {v["id"]: v for v in data["videos"]}
        for video in data["videos"]:
            name = video["file_names"][0].split("/")[0]
            assert video["file_names"] == [f"{name}/{i:05d}.jpg" for i in range(len(SOURCE_INDICES))]
            assert video["length"] == len(SOURCE_INDICES) and (video["width"], video["height"]) == (W, H)
            # keyframes 0, 4, 6, 8 were extracted as frames 0, 2, 3, 4; frame 3 is annotated but empty
            # (null for every track, as on the unannotated frames 1 and 5): only this list tells them apart
            assert video["annotated_frames"] == [0, 2, 3, 4]
            for file_name in video["file_names"]:
                path = project / layout.YTVIS / split / file_name
                assert os.path.samefile(path, project / layout.FRAMES / file_name)  # hard link, no copy
        for track in data["annotations"]:
            video = videos[track["video_id"]]
            assert len(track["segmentations"]) == len(track["bboxes"]) == len(track["areas"]) == video["length"]
            present = [i for i, s in enumerate(track["segmentations"]) if s is not None]
            # extracted frames 0..5 are source 0,2,4,6,8,10; keyframes 0,4,6,8 (6 without objects)
            if cats[track["category_id"]] == "gripper":
                assert present == [0, 2, 4]
            else:
                assert present == [0, 4]
            for i, seg in enumerate(track["segmentations"]):
                if seg is None:
                    assert track["bboxes"][i] is None and track["areas"][i] is None
                else:
                    assert track["bboxes"][i] == rle_bbox(seg) and track["areas"][i] == rle_area(seg)
            source = SOURCE_INDICES[present[0]]
            if cats[track["category_id"]] == "gripper":
                expected = box_mask(2 + source, 10, 8, 10)
                assert np.array_equal(rle_to_mask(track["segmentations"][0]), expected)


def test_raw_json_has_nulls(project):
    build(project)
    text = (project / layout.YTVIS / "train" / layout.YTVIS_ANNOTATIONS).read_text()
    assert "null" in text


def test_min_track_frames_drops_short_tracks(project):
    summary = build(project, min_track_frames=3)
    assert summary["tracks_dropped"] == len(VIDEOS)  # the second track has 2 annotated extracted frames
    for data in all_splits(project).values():
        for track in data["annotations"]:
            assert sum(s is not None for s in track["segmentations"]) >= 3
        assert len(data["annotations"]) == len(data["videos"])


def test_video_without_annotations_is_kept_without_tracks(project, capsys):
    (project / layout.RAW / "video_annotations" / "cam_d.json").unlink()
    build(project)
    assert "no annotations for video cam_d" in capsys.readouterr().err
    split = load(project / layout.SPLITS_FILE)["cam_d"]
    data = all_splits(project)[split]
    video = next(v for v in data["videos"] if v["file_names"][0].startswith("cam_d/"))
    assert not [t for t in data["annotations"] if t["video_id"] == video["id"]]
    assert video["annotated_frames"] == []


def test_readers_accept_the_annotated_frames_key(project):
    """sam3's YTVIS reader (what its evaluator loads) and the pycocotools-style index take the file as is."""
    from sam3.eval.ytvis_coco_wrapper import YTVIS

    build(project)
    path = project / layout.YTVIS / "train" / layout.YTVIS_ANNOTATIONS
    data = load(path)
    index = YTVIS(str(path), ignore_gt_cats=False)
    assert sorted(index.imgs) == sorted(v["id"] for v in data["videos"])
    assert len(index.anns) == len(data["annotations"])


def _assert_failed_cleanly(result, project, *needles):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)
    assert not (project / layout.YTVIS).exists()
    assert [p.name for p in (project / "data").iterdir() if p.name.startswith(".")] == []


def test_missing_splits_file_is_a_clear_error(project):
    (project / layout.SPLITS_FILE).unlink()
    result = run_stage("to_ytvis", project)
    _assert_failed_cleanly(result, project, "splits.json", "run the to_coco stage first")


def test_frame_size_change_names_the_frame(project):
    write_jpeg(project / layout.FRAMES / "cam_a" / "00004.jpg", seed=1, width=W + 8)
    result = run_stage("to_ytvis", project)
    _assert_failed_cleanly(result, project, "cam_a/00004.jpg", "56x32", "48x32")


def test_bad_segmentation_names_file_frame_and_track(project):
    path = project / layout.RAW / "video_annotations" / "cam_e.json"
    data = json.loads(path.read_text())
    data["frames"]["8"]["2"] = {"size": [H + 1, W], "counts": "0"}
    path.write_text(json.dumps(data))
    result = run_stage("to_ytvis", project)
    _assert_failed_cleanly(result, project, "cam_e.json", "frame 8 track 2")


def test_failed_run_removes_previous_output(project):
    build(project)
    (project / layout.FRAMES / "cam_b" / "00002.jpg").unlink()
    with pytest.raises(UserError, match="00002.jpg"):
        build(project)
    assert not (project / layout.YTVIS).exists()


def test_bad_param(project):
    with pytest.raises(UserError, match="min_track_frames"):
        build(project, min_track_frames=0)


def test_warns_when_no_annotated_frame_was_extracted(project, capsys):
    path = project / layout.RAW / "video_annotations" / "cam_a.json"
    data = json.loads(path.read_text())
    data["frames"] = {"5": data["frames"]["5"]}  # source frame 5 is not among the extracted 0, 2, ..., 10
    path.write_text(json.dumps(data))
    summary = build(project)
    assert "none of the annotated source frames was extracted" in capsys.readouterr().err
    assert summary["tracks_dropped"] == 2  # both tracks are all null there
