"""The video model's weights: Stage 1 weights in, starting checkpoints, the Stage 2 export out and back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from factory_sam3 import layout
from factory_sam3.errors import UserError
from factory_sam3.models.build import load_state_dict_file
from factory_sam3.models.video.build import (
    STAGE2_CONFIG,
    STAGE2_WEIGHTS,
    TINY_TRACKER,
    Sam3VideoModel,
    TinyTrackerConfig,
    build_video_model,
)

# ---------------------------------------------------------------------------------------------- checkpoints


def stage1_weights_file(stage1: str | os.PathLike) -> Path:
    """The Stage 1 export inside ``models/stage1`` (a directory) or the file itself."""
    stage1 = Path(stage1)
    if stage1.is_file():
        return stage1
    if not stage1.is_dir():
        raise UserError("Stage 1 output not found (run `dvc repro train_stage1`)", stage1)
    preferred = [stage1 / n for n in ("model.pt", "sam3_stage1.pt", "checkpoint.pt", "stage1.pt")]
    for path in preferred:
        if path.is_file():
            return path
    candidates = sorted(stage1.glob("*.pt")) + sorted(stage1.glob("*.pth"))
    if len(candidates) == 1:
        return candidates[0]
    raise UserError(f"expected one Stage 1 checkpoint (*.pt) here, found {len(candidates)}", stage1)


def split_stage1_state(state: dict) -> tuple[dict, dict]:
    """Stage 1 export -> (detector keys without prefix, tracker keys without prefix).

    Stage 1 exports ``detector.*`` (the builder layout); an unprefixed Trainer checkpoint is accepted too.
    sam3's ``inst_interactive_predictor.model.*`` keys map one-to-one to the tracker.
    """
    detector, tracker = {}, {}
    prefixed = any(k.startswith("detector.") for k in state)
    for key, value in state.items():
        if key.startswith("tracker."):
            tracker[key[len("tracker.") :]] = value
            continue
        if prefixed:
            if not key.startswith("detector."):
                continue
            key = key[len("detector.") :]
        if key.startswith("inst_interactive_predictor.model."):
            tracker[key[len("inst_interactive_predictor.model.") :]] = value
        else:
            detector[key] = value
    return detector, tracker


def starting_checkpoint(model: Sam3VideoModel, params: dict):
    """The profile's starting weights for ``init_from_checkpoints``: the released SAM3 checkpoint
    (``model.checkpoint``) for ``sam3``, the shipped pretrained file for ``tiny`` (None when the tiny model is
    asked to start from random weights, see ``models.pretrained``)."""
    from factory_sam3.models import pretrained

    if model.profile == "sam3":
        return params.get("checkpoint")
    return None if pretrained.use_random_init() else pretrained.tiny_weights_path()


def init_from_checkpoints(model: Sam3VideoModel, stage1: str | os.PathLike | None, base_checkpoint=None) -> dict:
    """Initialise the detector (and image trunk) from the Stage 1 export and the tracker from the profile's
    starting weights (``starting_checkpoint``: the released SAM3 checkpoint, or the tiny pretrained file).
    Missing detector keys are an error, except the tracker neck ``sam2_convs`` (Stage 1 trains an image model
    without it): it comes from the base checkpoint or, failing that, is a copy of the trained detector neck.
    Returns a report of what came from where."""
    report = {"detector_from_stage1": 0, "tracker_from": "random", "sam2_convs_from": "random"}
    base_det, base_trk = {}, {}
    if base_checkpoint and model.profile == "tiny":
        from factory_sam3.models import pretrained

        base_det, base_trk = split_stage1_state(pretrained.tiny_state(base_checkpoint))
        # made at 224 px: resampled for a model built at another tiny resolution (as Stage 1 loads them)
        base_det = pretrained.fit_resolution(base_det, model.detector.state_dict())
        report["tracker_from"] = str(base_checkpoint)
    elif base_checkpoint:
        from factory_sam3.models.build import resolve_checkpoint

        base_checkpoint = resolve_checkpoint(base_checkpoint)  # local path, or the gated hub id (HF_TOKEN)
        base_det, base_trk = split_stage1_state(load_state_dict_file(base_checkpoint))
        report["tracker_from"] = str(base_checkpoint)
    det_state, trk_state = (
        ({}, {}) if stage1 is None else split_stage1_state(load_state_dict_file(stage1_weights_file(stage1)))
    )
    detector_keys = set(model.detector.state_dict())
    merged = {k: v for k, v in base_det.items() if k in detector_keys}
    merged.update({k: v for k, v in det_state.items() if k in detector_keys})
    neck_prefix = "backbone.vision_backbone.sam2_convs."
    if not any(k.startswith(neck_prefix) for k in merged):
        source = {**base_det, **det_state}
        for key in detector_keys:
            if key.startswith(neck_prefix):
                twin = "backbone.vision_backbone.convs." + key[len(neck_prefix) :]
                if twin in source:
                    merged[key] = source[twin]
        report["sam2_convs_from"] = "copy of the Stage 1 detector neck"
    else:
        report["sam2_convs_from"] = "checkpoint"
    if stage1 is not None:
        unexpected = sorted(k for k in det_state if k not in detector_keys)
        if unexpected:
            raise UserError(
                f"Stage 1 checkpoint does not fit the {model.profile} detector: {len(unexpected)} unexpected keys "
                f"(e.g. {unexpected[0]}); was it trained with another model.profile?",
                stage1_weights_file(stage1),
            )
    missing = sorted(k for k in detector_keys if k not in merged)
    if stage1 is not None and missing:
        raise UserError(
            f"Stage 1 checkpoint lacks {len(missing)} detector keys (e.g. {missing[0]}); "
            "was it trained with another model.profile?",
            stage1_weights_file(stage1),
        )
    model.detector.load_state_dict(merged, strict=not missing)
    report["detector_from_stage1"] = len(det_state)
    tracker_state = {**base_trk, **trk_state}
    if tracker_state:
        try:
            result = model.tracker.load_state_dict(tracker_state, strict=False)
        except RuntimeError as err:  # shape mismatch: weights made for other dimensions
            raise UserError(
                f"tracker weights do not fit the {model.profile} tracker ({str(err).splitlines()[-1].strip()})",
                base_checkpoint or stage1,
            ) from None
        if result.missing_keys:
            raise UserError(
                f"tracker weights lack {len(result.missing_keys)} keys (e.g. {result.missing_keys[0]})",
                base_checkpoint or stage1,
            )
        if trk_state:
            report["tracker_from"] = "stage1"
    return report


def export_state_dict(model: Sam3VideoModel) -> dict:
    """The full video-model state dict (``detector.*`` + ``tracker.*``), on CPU, contiguous."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_stage2(model: Sam3VideoModel, out_dir: Path, extra: dict | None = None) -> None:
    """Write ``model.pt`` (state dict) and ``config.json`` (how to rebuild) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(export_state_dict(model), out_dir / STAGE2_WEIGHTS)
    config = dict(model.config)
    config.update(extra or {})
    config["weights"] = STAGE2_WEIGHTS
    (out_dir / STAGE2_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_stage2(
    path: str | os.PathLike = layout.STAGE2_MODEL, profile: str | None = None, device: str | torch.device = "cpu"
):
    """Rebuild the Stage 2 video model from ``path`` (a ``models/stage2`` directory or a ``model.pt``),
    strictly, in eval mode. ``profile`` defaults to the one recorded in ``config.json``."""
    path = Path(path)
    weights = path / STAGE2_WEIGHTS if path.is_dir() else path
    config_file = weights.parent / STAGE2_CONFIG
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    profile = profile or config.get("profile") or "tiny"
    tiny_tracker = TinyTrackerConfig(**config["tracker"]) if profile == "tiny" and "tracker" in config else TINY_TRACKER
    resolution = config.get("detector", {}).get("resolution") if profile == "tiny" else None
    model = build_video_model(profile, seed=None, tiny_tracker=tiny_tracker, resolution=resolution)
    state = load_state_dict_file(weights)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise UserError(f"not a {profile} Stage 2 checkpoint ({str(err).splitlines()[0]})", weights) from None
    return model.to(device).eval()
