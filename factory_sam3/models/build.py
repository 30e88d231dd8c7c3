"""Build SAM3's image model for a profile: `tiny` (small, our pretrained weights) or `sam3` (full size + checkpoint)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from factory_sam3.errors import UserError
from factory_sam3.io import load_torch_file
from factory_sam3.models import pretrained, sam3_compat
from factory_sam3.models.assets import bpe_path

PROFILES = ("tiny", "sam3")
HUB_ID = "facebook/sam3"
SAM3_RESOLUTION = 1008


def resolve_checkpoint(checkpoint: str | os.PathLike | None) -> Path:
    """A local checkpoint file for the `sam3` profile: a path, or the hub id facebook/sam3 (HF_TOKEN).

    Every failure is a UserError raised before any training starts.
    """
    if not checkpoint:
        raise UserError("model.checkpoint is empty: set a local .pt path or 'facebook/sam3'", "params.yaml")
    checkpoint = str(checkpoint)
    if checkpoint == HUB_ID or (
        checkpoint.count("/") == 1 and not Path(checkpoint).exists() and not checkpoint.endswith((".pt", ".pth"))
    ):
        token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
        if not token:
            raise UserError(
                f"model.checkpoint is the gated hub model '{checkpoint}' but HF_TOKEN is not set "
                "(request access on huggingface.co, then export HF_TOKEN=...), or point it at a local .pt",
                "params.yaml",
            )
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(repo_id=checkpoint, filename="sam3.pt", token=token))
        except Exception as err:  # network, 401/403 gated, missing file: all user-actionable
            raise UserError(f"could not download sam3.pt from '{checkpoint}': {err}", "params.yaml") from None
    path = Path(checkpoint)
    if not path.is_file():
        raise UserError("checkpoint file not found (model.checkpoint in params.yaml)", path)
    return path


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The package's one reader of weight files: a state dict with ``weights_only=True`` (Trainer checkpoints and
    ``{"model": sd}`` files unwrapped); a missing, unreadable or non-state-dict file is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError("checkpoint not found", path)
    ckpt = load_torch_file(path, "cannot load checkpoint, not a readable PyTorch checkpoint")
    if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict):
        ckpt = ckpt["model"]
    if not isinstance(ckpt, dict):
        raise UserError("checkpoint does not hold a state dict", path)
    return ckpt


def detector_state_dict(ckpt: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys as Sam3Image expects them: upstream checkpoints prefix the image model with 'detector.'."""
    if any(k.startswith("detector.") for k in ckpt):
        return {k[len("detector.") :]: v for k, v in ckpt.items() if k.startswith("detector.")}
    return dict(ckpt)


def load_weights_strict(model: nn.Module, ckpt: dict[str, torch.Tensor], source: object) -> None:
    """Load weights and refuse a checkpoint that leaves parameters missing (upstream's loader only
    prints them and "can silently load nothing", sam3#606)."""
    result = model.load_state_dict(detector_state_dict(ckpt), strict=False)
    if result.missing_keys:
        shown = ", ".join(result.missing_keys[:5])
        raise UserError(
            f"checkpoint leaves {len(result.missing_keys)} model weights missing (e.g. {shown}); "
            "is it a SAM3 image-model checkpoint?",
            source,
        )


def load_tiny_pretrained_(model: nn.Module) -> None:
    """The tiny profile's shipped starting weights into a tiny image model (strict; the tracker neck
    ``sam2_convs`` of the video model is skipped when the image model has none)."""
    state = pretrained.tiny_state()
    has_tracker_neck = any(".sam2_convs." in k for k in model.state_dict())
    state = {k: v for k, v in state.items() if has_tracker_neck or ".sam2_convs." not in k}
    pretrained.load_into(model, state, "detector.", pretrained.tiny_weights_path())


def freeze_(model: nn.Module, prefixes: Iterable[str]) -> list[str]:
    """Set requires_grad=False on parameters under each module prefix; unknown prefixes are an error."""
    frozen = []
    names = [name for name, _ in model.named_parameters()]
    for prefix in prefixes or ():
        prefix = prefix.rstrip(".")
        hits = [n for n in names if n == prefix or n.startswith(prefix + ".")]
        if not hits:
            raise UserError(
                f"freeze: no parameters under '{prefix}' (e.g. backbone.language_backbone)",
                "params.yaml",
                "train_stage1.freeze",
            )
        frozen.extend(hits)
    frozen_set = set(frozen)
    for name, param in model.named_parameters():
        if name in frozen_set:
            param.requires_grad_(False)
    return frozen


def set_activation_checkpointing_(model: nn.Module, enabled: bool) -> None:
    """Toggle sam3's per-module activation checkpointing flags (the fusion encoder and decoder keep
    theirs: upstream asserts it in training)."""
    from sam3.model.decoder import TransformerDecoder
    from sam3.model.encoder import TransformerEncoder

    for module in model.modules():
        if isinstance(module, (TransformerEncoder, TransformerDecoder)):
            continue
        for attr in ("use_act_checkpoint", "use_act_ckpt", "act_ckpt", "use_act_checkpoint_seg_head"):
            if isinstance(getattr(module, attr, None), bool):
                setattr(module, attr, enabled)


def build_image_model(
    profile: str = "tiny",
    checkpoint: str | os.PathLike | None = None,
    device: str = "cpu",
    train: bool = False,
    resolution: int | None = None,
    freeze: Iterable[str] = (),
    activation_checkpointing: bool | None = None,
    random_init: bool = False,
) -> nn.Module:
    """SAM3's image model (``sam3.model.sam3_image.Sam3Image``) for a profile.

    tiny:  the shipped pretrained weights (``models/pretrained/tiny_sam3.pt``, see models.pretrained), or
           ``checkpoint`` (our exported Stage 1 file or a Trainer checkpoint); ``random_init`` skips both.
    sam3:  full size from sam3.model_builder, weights from ``checkpoint`` (path or 'facebook/sam3').
    ``train`` attaches the matcher and leaves train mode; otherwise eval mode. ``model.resolution_px``
    records the input size the model expects. ``random_init`` builds either profile without weights
    (pretraining and benchmarks).
    """
    sam3_compat.apply()
    if profile not in PROFILES:
        raise UserError(f"unknown model.profile '{profile}' (expected one of {', '.join(PROFILES)})", "params.yaml")
    if profile == "tiny":
        from factory_sam3.models.tiny import TINY_CONFIG, build_tiny_image_model

        cfg = TINY_CONFIG if resolution is None else dataclasses.replace(TINY_CONFIG, resolution=int(resolution))
        if activation_checkpointing is not None:
            cfg = dataclasses.replace(cfg, act_ckpt=bool(activation_checkpointing))
        try:
            model = build_tiny_image_model(cfg, train=train)
        except ValueError as err:
            raise UserError(str(err), "params.yaml", "train_stage1.resolution") from None
        if checkpoint is not None:
            load_weights_strict(model, load_state_dict_file(checkpoint), checkpoint)
        elif not random_init and not pretrained.use_random_init():
            load_tiny_pretrained_(model)
        resolution = cfg.resolution
    else:
        if resolution not in (None, SAM3_RESOLUTION):
            raise UserError(
                f"the sam3 profile runs at {SAM3_RESOLUTION} px (got {resolution})",
                "params.yaml",
                "train_stage1.resolution",
            )
        state = None
        if not random_init:
            path = resolve_checkpoint(checkpoint)
            state = load_state_dict_file(path)  # read before building: a bad file fails in seconds
        from sam3.model_builder import build_sam3_image_model

        model = build_sam3_image_model(
            bpe_path=str(bpe_path()),
            device="cpu",
            eval_mode=not train,
            checkpoint_path=None,
            load_from_HF=False,
            enable_segmentation=True,
        )
        if state is None:
            from factory_sam3.models.tiny import init_text_encoder_

            init_text_encoder_(model.backbone.language_backbone)
        else:
            load_weights_strict(model, state, path)
        if activation_checkpointing is not None:
            set_activation_checkpointing_(model, bool(activation_checkpointing))
        resolution = SAM3_RESOLUTION
    freeze_(model, freeze)
    model.resolution_px = int(resolution)
    model.profile = profile
    model = model.to(device)
    if train:
        model.train()
    else:
        model.eval()
    return model
