"""The models evaluate compares, as the callables the runner takes.

- ``baseline``: the profile's starting models, before any fine-tuning: the starting detector (images) and the
  starting detector + starting tracker (video). ``tiny``: the shipped pretrained weights Stage 1 and Stage 2
  start from (same builders, same seeds). ``sam3``: the released SAM3 checkpoint (``model.checkpoint``).
- ``stage1``: what Stage 1 alone gives in video: the Stage 1 detector and image trunk with the starting
  tracker, i.e. the model Stage 2 starts from. (Its image model is the Stage 1 export, as ``finetuned``'s.)
- ``finetuned``: the Stage 1 export (images) and the Stage 2 export (video).

The starting models are built in one place, :func:`starting_image_model` and :func:`starting_video_model`:
change them there when the profile's starting weights change. The model code itself lives in
factory_sam3.models (Stage 1: build/load/predict_image; Stage 2: video.py with load_stage2/track); this module
only adapts it to the runner's protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from factory_sam3.errors import UserError
from factory_sam3.evaluation.runner import PredictImage, Track


@dataclass
class ModelPair:
    label: str
    predict_image: PredictImage
    track: Track
    source: dict[str, Any]


def image_predictor(model, min_score: float = 0.0) -> PredictImage:
    """Adapt factory_sam3.models.predict_image (Stage 1's inference) to ``(image, class_names) -> [...]``."""
    from PIL import Image

    from factory_sam3.models import predict_image

    def predict(image: np.ndarray, class_names) -> list[dict]:
        out = []
        # score_threshold=min_score: keep low-scoring detections, COCO AP ranks them (the default 0.5 would bias it)
        for category, score, mask, box in predict_image(
            model, Image.fromarray(image), list(class_names), score_threshold=min_score
        ):
            out.append(
                {
                    "category": category,
                    "score": float(score),
                    "mask": np.asarray(mask, dtype=bool),
                    "box": [float(v) for v in box],
                }
            )
        return out

    return predict


def video_tracker(video_model) -> Track:
    """Stage 2's tracker: semi-supervised ``track`` when called, online sessions for text-prompted VIS."""
    from factory_sam3.inference.online import ModelTracker

    return ModelTracker(video_model)


def starting_image_model(profile: str, model_params: dict, device: str, resolution: int | None = None):
    """The image model of ``profile`` before fine-tuning, as Stage 1 starts from it, in eval mode.
    ``resolution`` (tiny): the size Stage 1 trained at (``models/stage1/stage1.json``)."""
    from factory_sam3.models import build_image_model

    checkpoint = None if profile == "tiny" else model_params.get("checkpoint")
    return build_image_model(profile, checkpoint=checkpoint, device=device, train=False, resolution=resolution)


def starting_video_model(
    profile: str,
    model_params: dict,
    device: str,
    seed: int = 0,
    resolution: int | None = None,
    tiny_tracker=None,
    stage1_dir: Path | None = None,
):
    """The video model of ``profile`` before Stage 2, in eval mode: the starting tracker with the starting
    detector and image trunk, or with Stage 1's when ``stage1_dir`` is given (the model Stage 2 trains from:
    same builder, seed and initialisation as factory_sam3.training.stage2)."""
    from factory_sam3.models import video as video_models

    kwargs: dict[str, Any] = {}
    if profile == "tiny":
        kwargs["resolution"] = resolution
        if tiny_tracker is not None:
            kwargs["tiny_tracker"] = tiny_tracker
    model = video_models.build_video_model(profile, seed=seed, **kwargs)
    video_models.init_from_checkpoints(model, stage1_dir, video_models.starting_checkpoint(model, model_params))
    return model.to(device).eval()


LABELS = ("baseline", "stage1", "finetuned")


def load_pair(
    label: str,
    model_params: dict,
    device: str,
    stage1_dir: Path,
    stage2_dir: Path,
    video_seed: int = 0,
    min_score: float = 0.0,
) -> ModelPair:
    """Build the image model and video model of ``label`` (one of :data:`LABELS`) for ``model.profile``."""
    from factory_sam3.models import video as video_models

    profile = model_params.get("profile", "tiny")
    checkpoint = model_params.get("checkpoint")
    if label not in LABELS:
        raise ValueError(f"unknown model label {label!r}")
    if label == "finetuned":
        image_model = _load_stage1(stage1_dir, device)
        if not Path(stage2_dir).exists():
            raise UserError("Stage 2 output not found (run `dvc repro train_stage2`)", stage2_dir)
        video_model = video_models.load_stage2(stage2_dir, profile=profile, device=device)
        source = {"image": str(stage1_dir), "video": str(stage2_dir)}
        return ModelPair(label, image_predictor(image_model, min_score), video_tracker(video_model), source)
    # The same builders, seeds and sizes the training stages started from, without their weights.
    stage1_info = _read_json(Path(stage1_dir) / "stage1.json")
    stage2_config = _read_json(Path(stage2_dir) / "config.json")
    resolution = stage1_info.get("resolution") if profile == "tiny" else None
    video_resolution = (
        (stage2_config.get("detector", {}).get("resolution") or resolution) if profile == "tiny" else None
    )
    tiny_tracker = (
        video_models.TinyTrackerConfig(**stage2_config["tracker"])
        if profile == "tiny" and "tracker" in stage2_config
        else None
    )
    if profile == "tiny":
        from factory_sam3.models import pretrained

        start = "random init" if pretrained.use_random_init() else str(pretrained.tiny_weights_path())
    else:
        start = str(checkpoint)
    if label == "baseline":
        image_model = starting_image_model(profile, model_params, device, resolution)
        video_model = starting_video_model(profile, model_params, device, video_seed, video_resolution, tiny_tracker)
        source = {
            "image": f"{start} (as Stage 1 starts)",
            "video": f"{start} (seed {video_seed}: detector and tracker as the profile starts)",
        }
    else:  # stage1
        image_model = _load_stage1(stage1_dir, device)
        video_model = starting_video_model(
            profile, model_params, device, video_seed, video_resolution, tiny_tracker, stage1_dir=Path(stage1_dir)
        )
        source = {
            "image": str(stage1_dir),
            "video": f"{stage1_dir} detector + {start} tracker (seed {video_seed}, as Stage 2 starts)",
        }
    return ModelPair(label, image_predictor(image_model, min_score), video_tracker(video_model), source)


def _read_json(path: Path) -> dict:
    import json

    try:
        return json.loads(Path(path).read_text()) if Path(path).is_file() else {}
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read ({err})", path) from None


def _load_stage1(stage1_dir: Path, device: str):
    from factory_sam3 import models

    stage1_dir = Path(stage1_dir)
    if not stage1_dir.exists():
        raise UserError("Stage 1 output not found (run `dvc repro train_stage1`)", stage1_dir)
    return models.load_stage1(stage1_dir, device=device).to(device).eval()  # the export names its profile
