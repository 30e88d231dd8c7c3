"""Model folders for predict tests, as the training stages lay them out, without training: ``models/stage1``
(a seeded random tiny image model with its categories) and ``models/stage2`` (a video model built from it)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

CATEGORIES = [{"id": i + 1, "name": n} for i, n in enumerate(["gripper", "part_A", "defect", "screw"])]


def make_models(root: Path, seed: int = 3) -> tuple[Path, Path]:
    from factory_sam3.models import video as video_models
    from factory_sam3.models.tiny import build_tiny_image_model

    stage1, stage2 = Path(root) / "stage1", Path(root) / "stage2"
    stage1.mkdir(parents=True)
    model = build_tiny_image_model(train=False, seed=seed)
    torch.save({"detector." + k: v for k, v in model.state_dict().items()}, stage1 / "model.pt")
    (stage1 / "stage1.json").write_text(json.dumps({"profile": "tiny", "resolution": 224, "categories": CATEGORIES}))
    video = video_models.build_video_model("tiny", seed=0)
    video_models.init_from_checkpoints(video, stage1)
    video_models.save_stage2(video, stage2)
    return stage1, stage2


def write_video(frames_dir: Path, out_file: Path, fps: float = 10.0) -> int:
    """An MP4 (mp4v) of the JPEG frames of one video folder; returns the frame count."""
    import cv2

    files = sorted(Path(frames_dir).glob("*.jpg"))
    first = cv2.imread(str(files[0]))
    writer = cv2.VideoWriter(str(out_file), cv2.VideoWriter_fourcc(*"mp4v"), fps, (first.shape[1], first.shape[0]))
    for f in files:
        writer.write(cv2.imread(str(f)))
    writer.release()
    return len(files)
