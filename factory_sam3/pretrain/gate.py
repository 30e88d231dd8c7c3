"""The pretraining gate: the tiny starting weights ship only if they do what the released SAM3 does.

Measured on pretraining's own held-out generic data (never seen in training, drawn from other seeds):

- the tracker follows its prompt: cross-object IoU (mean IoU between the masks predicted for different objects
  on one frame) at most ``max_cross_object_iou`` — the ground truth's is ~0;
- it tracks: J (mask-prompted, frames after the prompt) beats the prompt copied forward by ``min_J_gain``;
- the detector finds the generic concepts by name: COCO segm AP at least ``min_segm_AP`` (pycocotools, all
  concepts queried on every test image).

``check`` returns the report with ``passed`` and the reasons; the stage writes the report either way and the
weights (float16, ``detector.*`` + ``tracker.*``) only when it passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from factory_sam3.pretrain import tracker as tracker_pretrain


@dataclass
class GateSettings:
    """pretrain/params.yaml ``gate``."""

    max_cross_object_iou: float = 0.3
    min_J_gain: float = 0.15
    min_segm_AP: float = 0.3
    clips: int = 40
    frames: int = 8
    seed: int = 20_000
    speed: tuple = (1.0, 8.0)
    max_images: int = 0

    def check(self, params_file) -> None:
        if self.clips < 1 or self.frames < 3:
            raise ValueError("'gate.clips' >= 1 and 'gate.frames' >= 3 required")


def tracking_report(video_model, settings: GateSettings) -> dict:
    clips = tracker_pretrain.heldout_clips(settings.seed, settings.clips, settings.frames, settings.speed)
    return tracker_pretrain.evaluate_tracking(video_model, clips)


def detection_report(image_model, test_split: Path, max_images: int = 0) -> dict:
    from factory_sam3.evaluation.models import image_predictor
    from factory_sam3.evaluation.runner import EvalSettings, evaluate_images

    settings = EvalSettings(max_images=max_images, min_score=0.05, num_overlays=0, label="pretrained")
    result = evaluate_images(image_predictor(image_model, 0.05), test_split, settings)["metrics"]
    keep = ("segm_AP", "segm_AP50", "bbox_AP", "segm_AP_per_class", "images", "detections")
    return {k: result[k] for k in keep if k in result}


def check(tracking: dict, detection: dict, settings: GateSettings) -> dict:
    failures = []
    cross = tracking.get("cross_object_iou")
    if cross is None or cross > settings.max_cross_object_iou:
        failures.append(f"cross-object IoU {cross} > {settings.max_cross_object_iou}: the tracker ignores its prompt")
    gain = None if tracking.get("J") is None else round(tracking["J"] - tracking["copy_J"], 4)
    if gain is None or gain < settings.min_J_gain:
        failures.append(f"J - copy_J = {gain} < {settings.min_J_gain}: it does not beat copying the prompt forward")
    ap = detection.get("segm_AP")
    if ap is None or ap < settings.min_segm_AP:
        failures.append(f"segm AP {ap} < {settings.min_segm_AP}: the detector does not find the generic concepts")
    return {
        "passed": not failures,
        "failures": failures,
        "J_gain_over_copy": gain,
        "thresholds": {
            "max_cross_object_iou": settings.max_cross_object_iou,
            "min_J_gain": settings.min_J_gain,
            "min_segm_AP": settings.min_segm_AP,
        },
    }


def export_weights(video_model, path: Path) -> str:
    """Write the shipped file: the full video-model state dict in float16; returns its md5."""
    from factory_sam3.io import atomic_file, file_md5

    state = {
        k: (v.detach().to("cpu").half() if v.is_floating_point() else v.detach().to("cpu")).contiguous().clone()
        for k, v in video_model.state_dict().items()
    }
    with atomic_file(path, "wb") as handle:
        torch.save(state, handle)
    return file_md5(path)
