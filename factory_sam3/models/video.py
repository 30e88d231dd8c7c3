"""SAM3's video model for Stage 2: the detector (image model) plus sam3's tracker, in two profiles.

``tiny``: the Stage 1 tiny image model (``factory_sam3.models.tiny``) as detector, with the tracker neck
(``sam2_convs``) added as upstream does (a copy of the detector neck), and sam3's tracker classes — memory
encoder (``SimpleMaskEncoder``), memory attention (``TransformerEncoderCrossAttention`` of RoPE layers), SAM
prompt encoder + mask decoder, object pointers — at small dimensions (``TinyTrackerConfig``), random init.
``sam3``: the full-size detector and tracker exactly as ``sam3.model_builder.build_sam3_video_model`` builds
them (same modules, same state-dict keys), GPU.

The model is a plain container ``Sam3VideoModel`` with ``.detector`` and ``.tracker``, so its state dict is
``detector.*`` + ``tracker.*`` — the layout of the official SAM3 checkpoint, which
``build_sam3_video_model(checkpoint_path=..., load_from_HF=False)`` loads strictly for the ``sam3`` profile.
The tracker is ``Sam3TrainableTracker``, a ``Sam3TrackerBase`` subclass that adds no parameter; we never build
``Sam3TrackerPredictor`` here (its constructor enters a process-wide CUDA autocast context).

Inference API (semi-supervised VOS, used by evaluation)::

    from factory_sam3.models.video import load_stage2, track
    model = load_stage2("models/stage2")                 # profile read from models/stage2/config.json
    masks = track(model, frames, {obj_id: (first_frame_idx, first_mask)})
    # frames: list of HxWx3 uint8 RGB arrays (one video, in time order)
    # first_masks: obj_id -> (index of the frame it is first given on, HxW bool mask on that frame)
    # returns obj_id -> list of HxW bool masks, one per frame (all False before the prompt frame)

Each object is prompted with its mask on its own frame and propagated forward with memory (objects prompted
on the same frame share one memory bank; all objects in flight go through the SAM heads as one batch, in one pass
over the video). Frames are resized to the model's square resolution,
outputs resized back to HxW.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from factory_sam3.errors import UserError
from factory_sam3.models import video_memory as vm

PROFILES = ("tiny", "sam3")
STAGE2_WEIGHTS = "model.pt"
STAGE2_CONFIG = "config.json"
IMAGE_MEAN = (0.5, 0.5, 0.5)  # SAM3's normalisation (image_mean/std of the video model)
IMAGE_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class TinyTrackerConfig:
    """Tracker dimensions of the tiny profile (full size in comments). The width (``hidden_dim``) is the
    detector's ``d_model`` (64 for tiny), the image size its resolution."""

    mem_dim: int = 32              # memory channels (SAM3: 64)
    num_maskmem: int = 7           # 1 conditioning + 6 previous frames (as SAM3)
    mem_attn_layers: int = 2       # memory attention layers (SAM3: 4)
    mem_attn_ffn: int = 256        # (SAM3: 2048)
    fuser_layers: int = 2          # CXBlocks in the memory encoder (as SAM3)
    decoder_mlp: int = 256         # SAM mask decoder two-way transformer MLP (SAM3: 2048)
    decoder_heads: int = 4         # (SAM3: 8)
    iou_head_hidden: int = 64      # (SAM3: 256)
    max_obj_ptrs: int = 16         # (as SAM3)
    max_cond_frames_in_attn: int = 4  # (as SAM3)
    # SAM3 tracks with 3 candidate masks and picks one by predicted IoU (and by stability at inference).
    # Measured on the synthetic data (60 steps, lr 1e-3): single-mask tracking learned no better, so tiny keeps
    # SAM3's behaviour; the switches stay for experiments.
    multimask_tracking: bool = True    # (as SAM3)
    dynamic_multimask: bool = True     # (as SAM3)


TINY_TRACKER = TinyTrackerConfig()
# the full-size heads exactly as Sam3TrackerBase._build_sam_heads hard-codes them
_FULL_HEADS = {"decoder_mlp": 2048, "decoder_heads": 8, "iou_head_hidden": 256}


def _make_tracker_class():
    from sam3.model.sam3_tracker_base import Sam3TrackerBase
    from sam3.sam.mask_decoder import MLP, MaskDecoder
    from sam3.sam.prompt_encoder import PromptEncoder
    from sam3.sam.transformer import TwoWayTransformer

    class _Tracker(Sam3TrackerBase):
        """``Sam3TrackerBase`` with the attributes its training path reads but never sets, and SAM heads
        whose widths can shrink (the full-size values reproduce upstream's modules exactly). No extra
        parameters: the state dict equals ``Sam3TrackerPredictor``'s."""

        def __init__(self, *args, head_dims: Optional[dict] = None, **kwargs):
            object.__setattr__(self, "_head_dims", dict(head_dims or _FULL_HEADS))
            super().__init__(*args, **kwargs)
            # read by Sam3TrackerBase in train mode, never set upstream (the SAM2 defaults)
            self.teacher_force_obj_scores_for_mem = False
            self.prob_to_dropout_spatial_mem = 0.0
            self.rng = np.random.default_rng(0)

        def _build_sam_heads(self):
            dims = self._head_dims
            self.sam_prompt_embed_dim = self.hidden_dim
            self.sam_image_embedding_size = self.image_size // self.backbone_stride
            self.sam_prompt_encoder = PromptEncoder(
                embed_dim=self.sam_prompt_embed_dim,
                image_embedding_size=(self.sam_image_embedding_size, self.sam_image_embedding_size),
                input_image_size=(self.image_size, self.image_size),
                mask_in_chans=16,
            )
            self.sam_mask_decoder = MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(
                    depth=2,
                    embedding_dim=self.sam_prompt_embed_dim,
                    mlp_dim=dims["decoder_mlp"],
                    num_heads=dims["decoder_heads"],
                ),
                transformer_dim=self.sam_prompt_embed_dim,
                iou_head_depth=3,
                iou_head_hidden_dim=dims["iou_head_hidden"],
                use_high_res_features=True,
                iou_prediction_use_sigmoid=True,
                pred_obj_scores=True,
                pred_obj_scores_mlp=True,
                use_multimask_token_for_obj_ptr=True,
                **(self.sam_mask_decoder_extra_args or {}),
            )
            self.obj_ptr_proj = MLP(self.hidden_dim, self.hidden_dim, self.hidden_dim, 3)
            self.obj_ptr_tpos_proj = torch.nn.Linear(self.hidden_dim, self.mem_dim)

        def _get_tpos_enc(self, rel_pos_list, device, max_abs_pos=None, dummy=False):
            # upstream pins memory (fails without CUDA)
            if dummy:
                return torch.zeros(len(rel_pos_list), self.mem_dim, device=device)
            return vm.temporal_pos_enc(self, list(rel_pos_list), max_abs_pos or 2, device)

    _Tracker.__name__ = _Tracker.__qualname__ = "Sam3TrainableTracker"
    return _Tracker


_TRACKER_CLASS = None


def tracker_class():
    global _TRACKER_CLASS
    if _TRACKER_CLASS is None:
        _TRACKER_CLASS = _make_tracker_class()
    return _TRACKER_CLASS


# the tracker options of upstream's build_tracker that Sam3TrackerBase takes
_TRACKER_OPTIONS = dict(
    num_maskmem=7,
    backbone=None,
    backbone_stride=14,
    multimask_output_in_sam=True,
    forward_backbone_per_frame_for_eval=True,
    trim_past_non_cond_mem_for_eval=False,
    multimask_output_for_tracking=True,
    multimask_min_pt_num=0,
    multimask_max_pt_num=1,
    non_overlap_masks_for_mem_enc=False,
    max_cond_frames_in_attn=4,
    offload_output_to_cpu_for_eval=False,
    sam_mask_decoder_extra_args={
        "dynamic_multimask_via_stability": True,
        "dynamic_multimask_stability_delta": 0.05,
        "dynamic_multimask_stability_thresh": 0.98,
    },
)


def build_tiny_tracker(hidden_dim: int, image_size: int, cfg: TinyTrackerConfig = TINY_TRACKER):
    """sam3's tracker classes at tiny dimensions (same module tree as upstream's ``build_tracker``)."""
    from sam3.model.decoder import TransformerDecoderLayerv2, TransformerEncoderCrossAttention
    from sam3.model.memory import CXBlock, SimpleFuser, SimpleMaskDownSampler, SimpleMaskEncoder
    from sam3.model.model_misc import TransformerWrapper
    from sam3.model.position_encoding import PositionEmbeddingSine
    from sam3.sam.transformer import RoPEAttention

    stride = _TRACKER_OPTIONS["backbone_stride"]
    if image_size % stride:
        raise ValueError(f"image size {image_size} must be a multiple of the backbone stride {stride}")
    feat = image_size // stride
    maskmem = SimpleMaskEncoder(
        out_dim=cfg.mem_dim,
        in_dim=hidden_dim,
        # precompute_resolution stays None: upstream precomputes with device="cuda"
        position_encoding=PositionEmbeddingSine(num_pos_feats=cfg.mem_dim, normalize=True, scale=None, temperature=10000),
        mask_downsampler=SimpleMaskDownSampler(
            embed_dim=hidden_dim, kernel_size=3, stride=2, padding=1, interpol_size=[feat * 16, feat * 16]
        ),
        fuser=SimpleFuser(
            layer=CXBlock(dim=hidden_dim, kernel_size=7, padding=3, layer_scale_init_value=1.0e-06, use_dwconv=True),
            num_layers=cfg.fuser_layers,
        ),
    )
    attn = dict(embedding_dim=hidden_dim, num_heads=1, downsample_rate=1, dropout=0.1, rope_theta=10000.0,
                feat_sizes=[feat, feat], use_fa3=False, use_rope_real=False)
    layer = TransformerDecoderLayerv2(
        cross_attention_first=False,
        activation="relu",
        dim_feedforward=cfg.mem_attn_ffn,
        dropout=0.1,
        pos_enc_at_attn=False,
        pre_norm=True,
        self_attention=RoPEAttention(**attn),
        d_model=hidden_dim,
        pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False,
        cross_attention=RoPEAttention(**attn, kv_in_dim=cfg.mem_dim, rope_k_repeat=True),
    )
    encoder = TransformerEncoderCrossAttention(
        remove_cross_attention_layers=[],
        batch_first=True,
        d_model=hidden_dim,
        frozen=False,
        pos_enc_at_input=True,
        layer=layer,
        num_layers=cfg.mem_attn_layers,
        use_act_checkpoint=False,  # upstream's wrapper fails; video_memory checkpoints per layer instead
    )
    options = dict(_TRACKER_OPTIONS, num_maskmem=cfg.num_maskmem, max_cond_frames_in_attn=cfg.max_cond_frames_in_attn,
                   multimask_output_for_tracking=cfg.multimask_tracking)
    options["sam_mask_decoder_extra_args"] = dict(options["sam_mask_decoder_extra_args"],
                                                  dynamic_multimask_via_stability=cfg.dynamic_multimask)
    return tracker_class()(
        image_size=image_size,
        transformer=TransformerWrapper(encoder=encoder, decoder=None, d_model=hidden_dim),
        maskmem_backbone=maskmem,
        max_obj_ptrs_in_encoder=cfg.max_obj_ptrs,
        head_dims={"decoder_mlp": cfg.decoder_mlp, "decoder_heads": cfg.decoder_heads,
                   "iou_head_hidden": cfg.iou_head_hidden},
        **options,
    )


def build_full_tracker(apply_temporal_disambiguation: bool = True):
    """The full-size tracker, module for module as ``sam3.model_builder.build_tracker`` (no predictor)."""
    from sam3 import model_builder as mb

    return tracker_class()(
        image_size=1008,
        transformer=mb._create_tracker_transformer(),
        maskmem_backbone=mb._create_tracker_maskmem_backbone(),
        use_memory_selection=apply_temporal_disambiguation,
        **_TRACKER_OPTIONS,
    )


def build_full_detector():
    """The full-size detector exactly as ``build_sam3_video_model`` builds it (random weights)."""
    from sam3 import model_builder as mb
    from sam3.model.model_misc import MLP, DotProductScoring
    from sam3.model.sam3_image import Sam3ImageOnVideoMultiGPU
    from sam3.model.vl_combiner import SAM3VLBackbone

    from factory_sam3.models.assets import bpe_path

    backbone = SAM3VLBackbone(scalp=1, visual=mb._create_vision_backbone(), text=mb._create_text_encoder(str(bpe_path())))
    scoring = DotProductScoring(
        d_model=256, d_proj=256,
        prompt_mlp=MLP(input_dim=256, hidden_dim=2048, output_dim=256, num_layers=2, dropout=0.1,
                       residual=True, out_norm=nn.LayerNorm(256)),
    )
    return Sam3ImageOnVideoMultiGPU(
        num_feature_levels=1,
        backbone=backbone,
        transformer=mb._create_sam3_transformer(has_presence_token=True),
        segmentation_head=mb._create_segmentation_head(),
        semantic_segmentation_head=None,
        input_geometry_encoder=mb._create_geometry_encoder(),
        use_early_fusion=True,
        use_dot_prod_scoring=True,
        dot_prod_scoring=scoring,
        supervise_joint_box_scores=True,
    )


class Sam3VideoModel(nn.Module):
    """``detector`` (SAM3 image model, its backbone carrying the tracker neck ``sam2_convs``) + ``tracker``."""

    def __init__(self, detector: nn.Module, tracker: nn.Module, profile: str, config: dict):
        super().__init__()
        self.detector = detector
        self.tracker = tracker
        self.profile = profile
        self.config = dict(config)

    @property
    def image_size(self) -> int:
        return int(self.tracker.image_size)

    @property
    def neck(self):
        return self.detector.backbone.vision_backbone


def _add_tracker_neck(detector: nn.Module) -> None:
    neck = detector.backbone.vision_backbone
    if neck.sam2_convs is None:
        # upstream: "sam2 neck is just a clone of the original neck"
        neck.sam2_convs = copy.deepcopy(neck.convs)


def build_video_model(profile: str = "tiny", seed: Optional[int] = 0, tiny_tracker: TinyTrackerConfig = TINY_TRACKER,
                      resolution: Optional[int] = None):
    """A randomly initialised video model of ``profile`` (weights come from ``init_from_checkpoints``).

    ``resolution`` (tiny only) must match the Stage 1 model's (``models/stage1/stage1.json``); default 224."""
    if profile == "tiny":
        from factory_sam3.models.tiny import TINY_CONFIG, build_tiny_image_model

        cfg = TINY_CONFIG if resolution is None else dataclasses.replace(TINY_CONFIG, resolution=int(resolution))
        try:
            detector = build_tiny_image_model(cfg, train=False, seed=seed)
        except ValueError as err:
            raise UserError(str(err), "params.yaml", "train_stage2.resolution") from None
        _add_tracker_neck(detector)
        if seed is not None:
            torch.manual_seed(seed + 1)
        tracker = build_tiny_tracker(cfg.d_model, cfg.resolution, tiny_tracker)
        config = {"profile": "tiny", "detector": dataclasses.asdict(cfg), "tracker": dataclasses.asdict(tiny_tracker)}
    elif profile == "sam3":
        from factory_sam3.models import sam3_compat

        if resolution not in (None, 1008):
            raise UserError(f"the sam3 profile runs at 1008 px (got {resolution})", "params.yaml", "train_stage2.resolution")
        sam3_compat.apply()  # only patches without CUDA (the full-size constructors allocate on "cuda")
        if seed is not None:
            torch.manual_seed(seed)
        detector = build_full_detector()
        tracker = build_full_tracker()
        config = {"profile": "sam3", "detector": {"resolution": 1008}}
    else:
        raise UserError(f"unknown model profile '{profile}' (expected one of {', '.join(PROFILES)})", "params.yaml", "model.profile")
    model = Sam3VideoModel(detector, tracker, profile, config)
    model.train()
    return model


# ---------------------------------------------------------------------------------------------- checkpoints

def load_state_file(path: str | os.PathLike) -> dict:
    """A state dict saved with torch.save, loaded with ``weights_only=True`` (``{"model": sd}`` unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise UserError("checkpoint not found", path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, pickle of non-tensors
        raise UserError(f"cannot load checkpoint ({type(err).__name__}: {err})", path) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise UserError("checkpoint is not a state dict", path)
    return state


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
            tracker[key[len("tracker."):]] = value
            continue
        if prefixed:
            if not key.startswith("detector."):
                continue
            key = key[len("detector."):]
        if key.startswith("inst_interactive_predictor.model."):
            tracker[key[len("inst_interactive_predictor.model."):]] = value
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
        base_det, base_trk = split_stage1_state(load_state_file(base_checkpoint))
        report["tracker_from"] = str(base_checkpoint)
    det_state, trk_state = ({}, {}) if stage1 is None else split_stage1_state(load_state_file(stage1_weights_file(stage1)))
    detector_keys = set(model.detector.state_dict())
    merged = {k: v for k, v in base_det.items() if k in detector_keys}
    merged.update({k: v for k, v in det_state.items() if k in detector_keys})
    neck_prefix = "backbone.vision_backbone.sam2_convs."
    if not any(k.startswith(neck_prefix) for k in merged):
        source = {**base_det, **det_state}
        for key in detector_keys:
            if key.startswith(neck_prefix):
                twin = "backbone.vision_backbone.convs." + key[len(neck_prefix):]
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
                f"(e.g. {unexpected[0]}); was it trained with another model.profile?", stage1_weights_file(stage1)
            )
    missing = sorted(k for k in detector_keys if k not in merged)
    if stage1 is not None and missing:
        raise UserError(
            f"Stage 1 checkpoint lacks {len(missing)} detector keys (e.g. {missing[0]}); "
            "was it trained with another model.profile?", stage1_weights_file(stage1)
        )
    model.detector.load_state_dict(merged, strict=not missing)
    report["detector_from_stage1"] = len(det_state)
    tracker_state = {**base_trk, **trk_state}
    if tracker_state:
        try:
            result = model.tracker.load_state_dict(tracker_state, strict=False)
        except RuntimeError as err:  # shape mismatch: weights made for other dimensions
            raise UserError(f"tracker weights do not fit the {model.profile} tracker ({str(err).splitlines()[-1].strip()})",
                            base_checkpoint or stage1) from None
        if result.missing_keys:
            raise UserError(f"tracker weights lack {len(result.missing_keys)} keys (e.g. {result.missing_keys[0]})",
                            base_checkpoint or stage1)
        if trk_state:
            report["tracker_from"] = "stage1"
    return report


def export_state_dict(model: Sam3VideoModel) -> dict:
    """The full video-model state dict (``detector.*`` + ``tracker.*``), on CPU, contiguous."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_stage2(model: Sam3VideoModel, out_dir: Path, extra: Optional[dict] = None) -> None:
    """Write ``model.pt`` (state dict) and ``config.json`` (how to rebuild) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(export_state_dict(model), out_dir / STAGE2_WEIGHTS)
    config = dict(model.config)
    config.update(extra or {})
    config["weights"] = STAGE2_WEIGHTS
    (out_dir / STAGE2_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_stage2(path: str | os.PathLike = "models/stage2", profile: Optional[str] = None, device: str | torch.device = "cpu"):
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
    state = load_state_file(weights)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise UserError(f"not a {profile} Stage 2 checkpoint ({str(err).splitlines()[0]})", weights) from None
    return model.to(device).eval()


# ---------------------------------------------------------------------------------------------- inference

def preprocess_frames(frames: list[np.ndarray], size: int, device) -> torch.Tensor:
    """RGB uint8 HxWx3 frames -> ``[T, 3, size, size]`` normalised as SAM3 expects."""
    out = []
    for i, frame in enumerate(frames):
        arr = np.asarray(frame)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"frame {i}: expected an HxWx3 uint8 RGB array, got {arr.shape} {arr.dtype}")
        out.append(torch.from_numpy(arr).permute(2, 0, 1))
    images = torch.stack(out).to(device=device, dtype=torch.float32) / 255.0
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGE_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, device=device).view(1, 3, 1, 1)
    return (images - mean) / std


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@torch.no_grad()
def track(model: Sam3VideoModel, frames: list[np.ndarray], first_masks: dict) -> dict:
    """Semi-supervised VOS: prompt each object with its mask on its frame, propagate forward with memory.

    ``first_masks``: ``obj_id -> (frame_idx, HxW bool)``. Returns ``obj_id -> [HxW bool] * len(frames)``.

    One pass over the video: objects prompted on the same frame form a group with its own memory bank
    (frame indices relative to its prompt frame, as SAM2 trains), a group joins the running batch on its
    prompt frame, and each later frame runs the memory attention per group (the banks differ in size) and the
    SAM heads and memory encoder once for all objects in flight (:func:`_propagate`).
    """
    if not frames:
        return {obj: [] for obj in first_masks}
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    H, W = np.asarray(frames[0]).shape[:2]
    size = model.image_size
    empty = np.zeros((H, W), dtype=bool)
    results = {obj: [empty] * len(frames) for obj in first_masks}
    by_start: dict[int, list] = {}
    for obj, (start, mask) in first_masks.items():
        if not 0 <= int(start) < len(frames):
            raise ValueError(f"object {obj}: prompt frame {start} outside the video ({len(frames)} frames)")
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (H, W):
            raise ValueError(f"object {obj}: mask shape {mask.shape} differs from the frames ({H}, {W})")
        by_start.setdefault(int(start), []).append((obj, mask))
    if not by_start:
        return results
    tracker = model.tracker
    try:
        with _autocast(device):
            images = preprocess_frames(frames, size, device)
            feats = vm.clip_features(model, images, chunk=8)
            running: list[_Group] = []
            for t in range(min(by_start), len(frames)):
                outputs: list[tuple[_Group, vm.FrameOutput]] = []
                if running:
                    outputs += _propagate(tracker, feats, t, running)
                if t in by_start:  # new objects join the running batch on their prompt frame
                    objects = by_start[t]
                    group = _Group(ids=[o for o, _ in objects], start=t, num_frames=len(frames) - t)
                    prompt = torch.from_numpy(np.stack([m for _, m in objects]))[:, None].to(device)
                    prompt = vm.resize_masks(prompt, size) > 0.5
                    f, p = feats.frame(t, len(group.ids))
                    out = vm.track_frame(tracker, f, p, 0, is_cond=True, cond_outputs={}, prev_outputs={},
                                         num_frames=group.num_frames, mask_inputs=prompt)
                    group.cond[0] = out
                    running.append(group)
                    outputs.append((group, out))
                for group, out in outputs:
                    logits = F.interpolate(out.masks.float(), size=(H, W), mode="bilinear", align_corners=False)
                    binary = (logits[:, 0] > 0).cpu().numpy()
                    for b, obj in enumerate(group.ids):
                        results[obj][t] = binary[b]
    finally:
        model.train(was_training)
    return results


@dataclass
class _Group:
    """Objects prompted on the same frame: one memory bank, frames counted from the prompt frame."""

    ids: list
    start: int
    num_frames: int
    cond: dict = dataclasses.field(default_factory=dict)
    prev: dict = dataclasses.field(default_factory=dict)


def _propagate(tracker, feats: vm.ClipFeatures, t: int, groups: list[_Group]) -> list[tuple[_Group, vm.FrameOutput]]:
    """Frame ``t`` for every running group: ``vm.track_frame``'s propagation step, with the memory attention
    per group and the SAM heads and memory encoder batched over all their objects."""
    sizes = [len(g.ids) for g in groups]
    total = sum(sizes)
    levels, pos = feats.frame(t, total)
    top, high_res = levels[-1], levels[:-1]
    pix, offset = [], 0
    for group, n in zip(groups, sizes):
        k = t - group.start
        pix.append(vm.condition_on_memory(tracker, top[offset:offset + n], pos[-1][offset:offset + n], k, group.cond,
                                          group.prev, group.num_frames))
        offset += n
    _, high, ious, _, high_best, obj_ptr, obj_logits = tracker._forward_sam_heads(
        backbone_features=torch.cat(pix), point_inputs=None, mask_inputs=None, high_res_features=high_res,
        multimask_output=tracker._use_multimask(False, None),
    )
    maskmem, maskmem_pos = vm.encode_memory(tracker, top, high_best, obj_logits, from_points=False)
    outputs, offset = [], 0
    for group, n in zip(groups, sizes):
        part = slice(offset, offset + n)
        offset += n
        out = vm.FrameOutput(high[part], ious[part], obj_logits[part], high_best[part], obj_ptr[part],
                             maskmem_features=maskmem[part], maskmem_pos_enc=maskmem_pos[part])
        k = t - group.start
        group.prev[k] = out
        # older frames never enter the memory again (as the per-group loop dropped them)
        group.prev.pop(k - tracker.num_maskmem - tracker.max_obj_ptrs_in_encoder, None)
        outputs.append((group, out))
    return outputs
