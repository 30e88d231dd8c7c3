"""validate: every bad-input kind gives a message naming file + record + problem, a non-zero exit and a
complete (never partial, never stale-passing) report; a good dataset passes with a deterministic report."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from factory_sam3 import layout
from factory_sam3.data import to_ytvis
from factory_sam3.formats.rle import mask_to_rle
from helpers_data import PARAMS, convert, load, make_project, run_stage

COCO_JSON = f"{layout.COCO}/train/{layout.COCO_ANNOTATIONS}"
YTVIS_JSON = f"{layout.YTVIS}/train/{layout.YTVIS_ANNOTATIONS}"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("validate") / "proj")
    convert(root)
    to_ytvis.run(
        PARAMS["to_ytvis"],
        raw=root / layout.RAW,
        frames=root / layout.FRAMES,
        splits_file=root / layout.SPLITS_FILE,
        out=root / layout.YTVIS,
        progress=False,
    )
    return root


@pytest.fixture
def project(pristine, tmp_path):
    root = tmp_path / "proj"
    shutil.copytree(pristine, root)  # real copies: corrupting one file never touches the pristine set
    return root


def edit(root, rel, change):
    path = root / rel
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def validate_fails(root, *needles):
    """Run the stage; assert failure with every needle in one error line, and a complete failing report."""
    result = run_stage("validate", root)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert any(all(n in line for n in needles) for line in error_lines), (needles, result.stderr)
    report = load(root / layout.VALIDATE_REPORT)
    assert report["ok"] is False and report["num_errors"] == len(report["errors"]) > 0
    assert any(all(n in line for n in needles) for line in report["errors"])
    assert [p.name for p in (root / "reports").iterdir()] == ["validate.json"], "no temporary files left"
    return report


def first_annotation(root):
    return load(root / COCO_JSON)["annotations"][0]


def first_video(root):
    return load(root / YTVIS_JSON)["videos"][0]


# --------------------------------------------------------------------------- good data


def test_good_dataset_passes_with_deterministic_report(project):
    result = run_stage("validate", project)
    assert result.returncode == 0, result.stderr
    first = (project / layout.VALIDATE_REPORT).read_bytes()
    report = json.loads(first)
    assert report["ok"] is True and report["errors"] == []
    stats = report["stats"]
    for split in layout.SPLITS:
        coco = load(project / layout.COCO / split / layout.COCO_ANNOTATIONS)
        assert stats["coco"][split]["images"] == len(coco["images"])
        assert stats["coco"][split]["annotations"] == len(coco["annotations"])
        assert sum(stats["coco"][split]["per_class"].values()) == len(coco["annotations"])
        ytvis = load(project / layout.YTVIS / split / layout.YTVIS_ANNOTATIONS)
        assert stats["ytvis"][split]["videos"] == len(ytvis["videos"])
        assert stats["ytvis"][split]["tracks"] == len(ytvis["annotations"])
    # the fixture has 8 negatives out of 18 images: outside the guide's 10-20% -> a warning, not an error
    assert stats["totals"]["negatives_share"] == round(8 / 18, 4)
    assert any("negatives share" in w for w in report["warnings"])
    assert "warning:" in result.stderr

    again = run_stage("validate", project)
    assert again.returncode == 0
    assert (project / layout.VALIDATE_REPORT).read_bytes() == first


def test_process_pool_gives_the_same_report(project, monkeypatch):
    from factory_sam3.data import validate

    def report(workers):
        return validate.check_datasets(
            PARAMS["validate"], project / layout.COCO, project / layout.YTVIS, workers=workers, progress=False
        ).as_dict()

    (project / layout.COCO / "train" / load(project / COCO_JSON)["images"][0]["file_name"]).write_bytes(b"broken")
    sequential = report(1)
    from factory_sam3.data import parallel

    monkeypatch.setattr(parallel, "POOL_MIN_SECONDS", 0.0)
    pools = []
    real_pool = parallel.process_pool
    monkeypatch.setattr(parallel, "process_pool", lambda *a, **k: pools.append(a) or real_pool(*a, **k))
    assert report(2) == sequential and sequential["num_errors"] == 1
    assert len(pools) == 1


def test_class_balance_warning_follows_the_param(project):
    (project / "params.yaml").write_text(
        json.dumps({**PARAMS, "validate": {"class_balance_ratio": 100.0, "negatives_min": 0.0, "negatives_max": 1.0}})
    )
    result = run_stage("validate", project)
    assert result.returncode == 0
    assert load(project / layout.VALIDATE_REPORT)["warnings"] == []
    (project / "params.yaml").write_text(
        json.dumps({**PARAMS, "validate": {"class_balance_ratio": 1.0, "negatives_min": 0.0, "negatives_max": 1.0}})
    )
    run_stage("validate", project)
    assert any("class imbalance" in w for w in load(project / layout.VALIDATE_REPORT)["warnings"])


def test_bad_params_remove_a_passing_report(project):
    assert run_stage("validate", project).returncode == 0
    bad = {**PARAMS, "validate": {**PARAMS["validate"], "class_balance_ratio": "two"}}
    (project / "params.yaml").write_text(json.dumps(bad))
    result = run_stage("validate", project)
    assert result.returncode != 0 and "'validate.class_balance_ratio' must be a number, got 'two'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (project / layout.VALIDATE_REPORT).exists()


def test_failed_run_replaces_a_passing_report(project):
    assert run_stage("validate", project).returncode == 0
    (project / COCO_JSON).write_text("{")
    validate_fails(project, COCO_JSON, "invalid JSON")


# --------------------------------------------------------------------------- COCO errors


def test_json_syntax(project):
    text = (project / COCO_JSON).read_text()
    (project / COCO_JSON).write_text(text[: len(text) // 2])
    validate_fails(project, COCO_JSON, "invalid JSON at line 1 column")


def test_missing_top_level_key(project):
    edit(project, COCO_JSON, lambda d: d.pop("images"))
    validate_fails(project, COCO_JSON, "missing required key 'images'")


def test_missing_record_key(project):
    ann = first_annotation(project)
    edit(project, COCO_JSON, lambda d: d["annotations"][0].pop("bbox"))
    validate_fails(project, COCO_JSON, f"annotation {ann['id']}", "missing required key(s) ['bbox']")


def test_duplicate_ids(project):
    def dup(d):
        d["images"].append(dict(d["images"][0]))

    image_id = load(project / COCO_JSON)["images"][0]["id"]
    edit(project, COCO_JSON, dup)
    validate_fails(project, COCO_JSON, f"image {image_id}", f"duplicate image id {image_id}")


def test_duplicate_annotation_ids(project):
    ann = first_annotation(project)
    edit(project, COCO_JSON, lambda d: d["annotations"].append(dict(d["annotations"][0])))
    validate_fails(project, COCO_JSON, f"annotation {ann['id']}", "duplicate annotation id")


def test_reference_to_missing_image(project):
    ann = first_annotation(project)
    edit(project, COCO_JSON, lambda d: d["annotations"][0].update(image_id=999))
    validate_fails(project, COCO_JSON, f"annotation {ann['id']}", "refers to missing image 999")


def test_reference_to_missing_category(project):
    ann = first_annotation(project)
    edit(project, COCO_JSON, lambda d: d["annotations"][0].update(category_id=77))
    validate_fails(project, COCO_JSON, f"annotation {ann['id']}", "refers to missing category 77")


def _first_image(root):
    image = load(root / COCO_JSON)["images"][0]
    return image, root / layout.COCO / "train" / image["file_name"]


def test_image_missing(project):
    image, path = _first_image(project)
    path.unlink()
    validate_fails(project, COCO_JSON, f"image {image['id']}", "image file missing", image["file_name"])


def test_image_unreadable(project):
    image, path = _first_image(project)
    path.write_bytes(b"this is not a jpeg")
    validate_fails(project, COCO_JSON, f"image {image['id']}", "unreadable or truncated", image["file_name"])


def test_image_truncated(project):
    image, path = _first_image(project)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header intact, pixels cut off
    validate_fails(project, COCO_JSON, f"image {image['id']}", "unreadable or truncated")


def test_image_size_differs_from_declared(project):
    image, path = _first_image(project)
    Image.new("RGB", (image["width"] + 4, image["height"]), "gray").save(path)
    validate_fails(
        project, COCO_JSON, f"image {image['id']}", f"is {image['width'] + 4}x{image['height']} but declared"
    )


def test_rle_size_differs_from_image(project):
    ann = first_annotation(project)
    h, w = ann["segmentation"]["size"]
    wrong = mask_to_rle(np.ones((h, w + 3), bool))
    edit(project, COCO_JSON, lambda d: d["annotations"][0].update(segmentation=wrong))
    validate_fails(project, COCO_JSON, f"annotation {ann['id']}", f"RLE size [{h}, {w + 3}]", "!= image size")


def test_undecodable_segmentation(project):
    ann = first_annotation(project)
    size = ann["segmentation"]["size"]
    edit(project, COCO_JSON, lambda d: d["annotations"][0].update(segmentation={"size": size, "counts": "~~~\u00e9"}))
    validate_fails(project, COCO_JSON, f"annotation {ann['id']}", "undecodable segmentation")


def test_bbox_outside_image(project):
    ann = first_annotation(project)
    edit(project, COCO_JSON, lambda d: d["annotations"][0].update(bbox=[40.0, 0.0, 30.0, 5.0]))
    validate_fails(project, COCO_JSON, f"annotation {ann['id']}", "outside the image")


def test_bbox_non_positive(project):
    ann = first_annotation(project)
    edit(project, COCO_JSON, lambda d: d["annotations"][0].update(bbox=[1.0, 1.0, 0.0, 5.0]))
    validate_fails(project, COCO_JSON, f"annotation {ann['id']}", "non-positive bbox")


def test_area_inconsistent_with_mask(project):
    ann = first_annotation(project)
    edit(project, COCO_JSON, lambda d: d["annotations"][0].update(area=ann["area"] * 2 + 10))
    validate_fails(project, COCO_JSON, f"annotation {ann['id']}", "inconsistent with the mask")


def test_empty_mask(project):
    ann = first_annotation(project)
    h, w = ann["segmentation"]["size"]
    empty = mask_to_rle(np.zeros((h, w), bool))
    edit(project, COCO_JSON, lambda d: d["annotations"][0].update(segmentation=empty, area=0))
    validate_fails(project, COCO_JSON, f"annotation {ann['id']}", "empty mask")


@pytest.mark.parametrize("name, problem", [("../../raw/images/img_000.jpg", "('..')"), ("/etc/hostname", "absolute")])
def test_coco_file_name_escaping_root(project, name, problem):
    image = load(project / COCO_JSON)["images"][0]
    edit(project, COCO_JSON, lambda d: d["images"][0].update(file_name=name))
    validate_fails(project, COCO_JSON, f"image {image['id']}", "escapes the dataset root", problem)


def test_missing_split_file(project):
    (project / layout.COCO / "valid" / layout.COCO_ANNOTATIONS).unlink()
    validate_fails(project, f"{layout.COCO}/valid/{layout.COCO_ANNOTATIONS}", "file not found")


# --------------------------------------------------------------------------- YTVIS errors


def test_ytvis_json_syntax(project):
    (project / YTVIS_JSON).write_text('{"videos": [}')
    validate_fails(project, YTVIS_JSON, "invalid JSON at line 1 column 13")


def test_ytvis_missing_key(project):
    video = first_video(project)
    edit(project, YTVIS_JSON, lambda d: d["videos"][0].pop("length"))
    validate_fails(project, YTVIS_JSON, f"video {video['id']}", "missing required key(s) ['length']")


def test_ytvis_duplicate_track_ids(project):
    track = load(project / YTVIS_JSON)["annotations"][0]
    edit(project, YTVIS_JSON, lambda d: d["annotations"].append(dict(d["annotations"][0])))
    validate_fails(project, YTVIS_JSON, f"annotation {track['id']}", "duplicate annotation id")


def test_ytvis_reference_to_missing_video(project):
    track = load(project / YTVIS_JSON)["annotations"][0]
    edit(project, YTVIS_JSON, lambda d: d["annotations"][0].update(video_id=404))
    validate_fails(project, YTVIS_JSON, f"annotation {track['id']}", "refers to missing video 404")


def test_ytvis_reference_to_missing_category(project):
    track = load(project / YTVIS_JSON)["annotations"][0]
    edit(project, YTVIS_JSON, lambda d: d["annotations"][0].update(category_id=55))
    validate_fails(project, YTVIS_JSON, f"annotation {track['id']}", "refers to missing category 55")


def test_ytvis_length_differs_from_file_names(project):
    video = first_video(project)
    edit(project, YTVIS_JSON, lambda d: d["videos"][0].update(length=video["length"] + 1))
    validate_fails(
        project, YTVIS_JSON, f"video {video['id']}", f"length {video['length'] + 1} != {video['length']} file_names"
    )


def test_ytvis_segmentations_differ_from_length(project):
    track = load(project / YTVIS_JSON)["annotations"][0]

    def drop_last(d):
        for key in ("segmentations", "bboxes", "areas"):
            d["annotations"][0][key].pop()

    edit(project, YTVIS_JSON, drop_last)
    validate_fails(
        project,
        YTVIS_JSON,
        f"annotation {track['id']}",
        f"but the track has {len(track['segmentations']) - 1} segmentations",
    )


def test_ytvis_frame_sizes_differ_within_video(project):
    video = first_video(project)
    frame = project / layout.YTVIS / "train" / video["file_names"][2]
    Image.new("RGB", (video["width"] * 2, video["height"]), "gray").save(frame, format="JPEG")
    validate_fails(
        project, YTVIS_JSON, f"video {video['id']}", "frame sizes differ within the video", video["file_names"][2]
    )


def test_ytvis_frame_missing(project):
    video = first_video(project)
    (project / layout.YTVIS / "train" / video["file_names"][-1]).unlink()
    validate_fails(project, YTVIS_JSON, f"video {video['id']}", "image file missing", video["file_names"][-1])


def test_ytvis_bad_mask_in_a_frame(project):
    data = load(project / YTVIS_JSON)
    track = data["annotations"][0]
    i = next(i for i, s in enumerate(track["segmentations"]) if s is not None)

    def corrupt(d):
        d["annotations"][0]["areas"][i] = 1

    edit(project, YTVIS_JSON, corrupt)
    validate_fails(project, YTVIS_JSON, f"annotation {track['id']} frame {i}", "area 1 inconsistent")


def test_ytvis_file_name_escaping_root(project):
    video = first_video(project)
    edit(project, YTVIS_JSON, lambda d: d["videos"][0]["file_names"].__setitem__(0, "../../frames/cam_a/00000.jpg"))
    validate_fails(project, YTVIS_JSON, f"video {video['id']}", "escapes the dataset root")


def test_many_errors_are_all_in_the_report_but_only_20_printed(project):
    def break_all(d):
        for ann in d["annotations"]:
            ann["category_id"] = 99
        for i in range(30):
            d["annotations"].append({"id": 1000 + i, "image_id": 5000, "category_id": 1})

    edit(project, COCO_JSON, break_all)
    result = run_stage("validate", project)
    assert result.returncode != 0
    report = load(project / layout.VALIDATE_REPORT)
    assert report["num_errors"] >= 30
    assert sum(line.startswith("error: ") for line in result.stderr.splitlines()) == 20 + 1  # + the summary line
    assert "more" in result.stderr


def test_training_guard_reads_the_validate_report(tmp_path):
    from factory_sam3.errors import UserError
    from factory_sam3.training import require_validated

    report = tmp_path / "validate.json"
    require_validated(report)  # no report (validate never ran): allowed
    report.write_text(json.dumps({"ok": True, "errors": []}))
    require_validated(report)
    report.write_text("{not json")
    with pytest.raises(UserError, match="unreadable validate report") as err:
        require_validated(report)
    assert str(report) in err.value.message
    report.write_text(json.dumps({"ok": False, "errors": []}))
    with pytest.raises(UserError, match=r"failed validation \(0 error\(s\)\)"):
        require_validated(report)
