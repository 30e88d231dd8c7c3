"""The raw-layout fixture the data-stage tests share (to_coco, to_ytvis, validate): a tiny project with
params.yaml, data/raw (stills, masks, video annotations) and data/frames (+ manifest), and ways to run a stage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from factory_sam3 import layout
from factory_sam3.data import to_coco
from factory_sam3.formats.rle import mask_to_rle

REPO = Path(__file__).resolve().parents[1]
W, H = 48, 32
VIDEOS = ["cam_a", "cam_b", "cam_c", "cam_d", "cam_e"]
STILLS = [f"img_{i:03d}" for i in range(8)]
PARAMS = {
    "to_coco": {"sample_rate": 2, "seed": 0, "splits": {"train": 0.6, "valid": 0.2, "test": 0.2}, "workers": 2},
    "to_ytvis": {"min_track_frames": 1},
    "validate": {"class_balance_ratio": 2.0, "negatives_min": 0.1, "negatives_max": 0.2},
}
# extracted frames keep every 2nd source frame: source indices 0, 2, ..., 10
SOURCE_INDICES = [0, 2, 4, 6, 8, 10]
# keyframes: 0 and 8 have both tracks, 4 only the gripper, 6 is an annotated negative, 5 was not extracted
KEYFRAMES = {0: ("1", "2"), 4: ("1",), 5: ("1",), 6: (), 8: ("1", "2")}


def box_mask(x: int, y: int, w: int, h: int, width: int = W, height: int = H) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[y : y + h, x : x + w] = 1
    return mask


def write_jpeg(path: Path, seed: int, width: int = W, height: int = H) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def write_mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((mask * 255).astype(np.uint8), mode="L").save(path)


def make_project(root: Path, params: dict | None = None) -> Path:
    """A tiny project: params.yaml, data/raw (stills + video annotations) and data/frames (+ manifest)."""
    raw, frames = root / layout.RAW, root / layout.FRAMES
    raw.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params or PARAMS))
    (raw / "categories.json").write_text(json.dumps(layout.CATEGORIES))
    (raw / "source.json").write_text(json.dumps({"source": "test-fixture"}))

    # stills: masks per class (guide Script 1), one empty mask, negatives, one with image_annotations/
    for i, name in enumerate(STILLS):
        write_jpeg(raw / "images" / f"{name}.jpg", seed=i)
    write_mask(raw / "masks" / "img_000_gripper.png", box_mask(2, 3, 10, 6))
    write_mask(raw / "masks" / "img_000_part_A.png", box_mask(20, 10, 8, 12))
    write_mask(raw / "masks" / "img_001_screw.png", box_mask(5, 5, 3, 3))
    write_mask(raw / "masks" / "img_002_defect.png", np.zeros((H, W), np.uint8))  # empty: dropped
    write_mask(raw / "masks" / "img_005_defect.png", box_mask(30, 1, 6, 4))
    write_mask(raw / "masks" / "img_006_screw.png", box_mask(0, 0, W, H))  # full frame
    (raw / "image_annotations").mkdir()
    (raw / "image_annotations" / "img_004.json").write_text(
        json.dumps(
            {
                "width": W,
                "height": H,
                "instances": [
                    {"category": "part_A", "segmentation": [[4, 4, 20, 4, 20, 16, 4, 16]]},
                    {"category": "defect", "segmentation": mask_to_rle(box_mask(30, 20, 5, 5))},
                ],
            }
        )
    )
    # img_003 and img_007: no mask, no annotation -> negatives

    manifest = {"videos": {}}
    for v, video in enumerate(VIDEOS):
        entry = {"source": f"videos/{video}.mp4", "status": "ok", "error": None, "fps": 10.0, "frames": []}
        for i, source_index in enumerate(SOURCE_INDICES):
            name = f"{i:05d}.jpg"
            write_jpeg(frames / video / name, seed=1000 + 10 * v + i)
            entry["frames"].append({"file": name, "source_index": source_index, "timestamp": source_index / 10})
        manifest["videos"][video] = entry
        ann_frames = {}
        for source_index, tracks in KEYFRAMES.items():
            ann_frames[str(source_index)] = {}
            for track in tracks:
                x = 2 + source_index + (0 if track == "1" else 20)
                if track == "2" and source_index == 8:  # polygons are accepted too
                    ann_frames[str(source_index)][track] = [[x, 10, x + 8, 10, x + 8, 20, x, 20]]
                else:
                    ann_frames[str(source_index)][track] = mask_to_rle(box_mask(x, 10, 8, 10))
        annotation = {
            "video": video,
            "width": W,
            "height": H,
            "num_frames": 11,
            "tracks": {"1": {"category": "gripper"}, "2": {"category": "part_A" if v % 2 else "screw"}},
            "frames": ann_frames,
        }
        (raw / "video_annotations").mkdir(exist_ok=True)
        (raw / "video_annotations" / f"{video}.json").write_text(json.dumps(annotation))
    # a video extract_frames could not decode (skip_bad_videos): left out with a warning
    manifest["videos"]["cam_broken"] = {
        "source": "videos/cam_broken.mp4",
        "status": "skipped",
        "error": "cannot decode",
        "fps": None,
        "frames": [],
    }
    frames.mkdir(parents=True, exist_ok=True)
    (frames / "manifest.json").write_text(json.dumps(manifest))
    return root


def run_stage(name: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "stages" / f"{name}.py"), "--params", "params.yaml", "--no-progress", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def convert(root: Path, **overrides) -> dict:
    params = {**PARAMS["to_coco"], **overrides}
    return to_coco.run(
        params,
        raw=root / layout.RAW,
        frames=root / layout.FRAMES,
        out=root / layout.COCO,
        splits_file=root / layout.SPLITS_FILE,
        progress=False,
    )
