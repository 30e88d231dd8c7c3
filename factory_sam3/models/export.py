"""The Stage 1 export (models/stage1/) and loading it back for inference, Stage 2 and evaluation.

models/stage1/
    model.pt     state dict of Sam3Image with every key prefixed 'detector.' — the layout
                 sam3.model_builder's loaders read (the Trainer's own checkpoints are unprefixed)
    config.yaml  the resolved Hydra config the Trainer ran
    stage1.json  {"profile", "resolution", "categories": [{"id", "name"}...], "epochs", "steps"}
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from factory_sam3 import layout
from factory_sam3.errors import UserError

MODEL_FILE = "model.pt"
INFO_FILE = "stage1.json"
PREFIX = "detector."


def save_detector_state(trainer_checkpoint: str | os.PathLike, out_file: str | os.PathLike) -> None:
    """Convert a Trainer checkpoint (unprefixed, with optimizer state) to the builder layout."""
    ckpt = torch.load(trainer_checkpoint, map_location="cpu", weights_only=True)
    state = ckpt["model"] if isinstance(ckpt, dict) and "model" in ckpt else ckpt
    torch.save({PREFIX + k: v for k, v in state.items()}, out_file)


def read_info(path: str | os.PathLike) -> dict:
    info_file = Path(path) / INFO_FILE
    if not info_file.is_file():
        raise UserError("not a Stage 1 export (no stage1.json); run `dvc repro train_stage1`", path)
    return json.loads(info_file.read_text())


def load_stage1(path: str | os.PathLike = layout.STAGE1_MODEL, device: str = "cpu") -> nn.Module:
    """The trained Stage 1 model in eval mode, ready for :func:`factory_sam3.models.predict_image`.

    Rebuilds the profile the export was trained with and strict-loads its weights (a missing weight
    is an error). ``model.categories`` holds the category list, ``model.resolution_px`` the input size.
    """
    from factory_sam3.models.build import build_image_model, load_state_dict_file, load_weights_strict

    path = Path(path)
    info = read_info(path)
    if info["profile"] == "tiny":
        model = build_image_model("tiny", resolution=info["resolution"], train=False)
    else:
        # the full model: build without downloading anything, then load our weights
        from sam3.model_builder import build_sam3_image_model

        from factory_sam3.models import sam3_compat
        from factory_sam3.models.assets import bpe_path

        sam3_compat.apply()
        model = build_sam3_image_model(
            bpe_path=str(bpe_path()), device="cpu", eval_mode=True, checkpoint_path=None, load_from_HF=False
        )
        model.resolution_px, model.profile = int(info["resolution"]), "sam3"
    load_weights_strict(model, load_state_dict_file(path / MODEL_FILE), path / MODEL_FILE)
    model.categories = info.get("categories", [])
    return model.to(device).eval()


def export_stage1(trainer_checkpoint, out_dir, info: dict, config_yaml: str | None = None) -> Path:
    """Write an export directory from any Trainer checkpoint (the launcher uses the same pieces)."""
    from factory_sam3.io import atomic_dir, write_json

    with atomic_dir(out_dir) as tmp:
        save_detector_state(trainer_checkpoint, tmp / MODEL_FILE)
        write_json(tmp / INFO_FILE, info)
        if config_yaml is not None:
            (tmp / "config.yaml").write_text(config_yaml)
    return Path(out_dir)
