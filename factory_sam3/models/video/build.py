"""The video model's builders: ``Sam3VideoModel`` (detector + tracker) in the tiny and sam3 profiles.

See factory_sam3.models.video for the overview."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
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

    mem_dim: int = 32  # memory channels (SAM3: 64)
    num_maskmem: int = 7  # 1 conditioning + 6 previous frames (as SAM3)
    mem_attn_layers: int = 2  # memory attention layers (SAM3: 4)
    mem_attn_ffn: int = 256  # (SAM3: 2048)
    fuser_layers: int = 2  # CXBlocks in the memory encoder (as SAM3)
    decoder_mlp: int = 256  # SAM mask decoder two-way transformer MLP (SAM3: 2048)
    decoder_heads: int = 4  # (SAM3: 8)
    iou_head_hidden: int = 64  # (SAM3: 256)
    max_obj_ptrs: int = 16  # (as SAM3)
    max_cond_frames_in_attn: int = 4  # (as SAM3)
    # SAM3 tracks with 3 candidate masks and picks one by predicted IoU (and by stability at inference).
    # Measured on the synthetic data (60 steps, lr 1e-3): single-mask tracking learned no better, so tiny keeps
    # SAM3's behaviour; the switches stay for experiments.
    multimask_tracking: bool = True  # (as SAM3)
    dynamic_multimask: bool = True  # (as SAM3)


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

        def __init__(self, *args, head_dims: dict | None = None, **kwargs):
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
        position_encoding=PositionEmbeddingSine(
            num_pos_feats=cfg.mem_dim, normalize=True, scale=None, temperature=10000
        ),
        mask_downsampler=SimpleMaskDownSampler(
            embed_dim=hidden_dim, kernel_size=3, stride=2, padding=1, interpol_size=[feat * 16, feat * 16]
        ),
        fuser=SimpleFuser(
            layer=CXBlock(dim=hidden_dim, kernel_size=7, padding=3, layer_scale_init_value=1.0e-06, use_dwconv=True),
            num_layers=cfg.fuser_layers,
        ),
    )
    attn = dict(
        embedding_dim=hidden_dim,
        num_heads=1,
        downsample_rate=1,
        dropout=0.1,
        rope_theta=10000.0,
        feat_sizes=[feat, feat],
        use_fa3=False,
        use_rope_real=False,
    )
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
    options = dict(
        _TRACKER_OPTIONS,
        num_maskmem=cfg.num_maskmem,
        max_cond_frames_in_attn=cfg.max_cond_frames_in_attn,
        multimask_output_for_tracking=cfg.multimask_tracking,
    )
    options["sam_mask_decoder_extra_args"] = dict(
        options["sam_mask_decoder_extra_args"], dynamic_multimask_via_stability=cfg.dynamic_multimask
    )
    return tracker_class()(
        image_size=image_size,
        transformer=TransformerWrapper(encoder=encoder, decoder=None, d_model=hidden_dim),
        maskmem_backbone=maskmem,
        max_obj_ptrs_in_encoder=cfg.max_obj_ptrs,
        head_dims={
            "decoder_mlp": cfg.decoder_mlp,
            "decoder_heads": cfg.decoder_heads,
            "iou_head_hidden": cfg.iou_head_hidden,
        },
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

    backbone = SAM3VLBackbone(
        scalp=1, visual=mb._create_vision_backbone(), text=mb._create_text_encoder(str(bpe_path()))
    )
    scoring = DotProductScoring(
        d_model=256,
        d_proj=256,
        prompt_mlp=MLP(
            input_dim=256,
            hidden_dim=2048,
            output_dim=256,
            num_layers=2,
            dropout=0.1,
            residual=True,
            out_norm=nn.LayerNorm(256),
        ),
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


def build_video_model(
    profile: str = "tiny",
    seed: int | None = 0,
    tiny_tracker: TinyTrackerConfig = TINY_TRACKER,
    resolution: int | None = None,
):
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
            raise UserError(
                f"the sam3 profile runs at 1008 px (got {resolution})", "params.yaml", "train_stage2.resolution"
            )
        sam3_compat.apply()  # only patches without CUDA (the full-size constructors allocate on "cuda")
        if seed is not None:
            torch.manual_seed(seed)
        detector = build_full_detector()
        tracker = build_full_tracker()
        config = {"profile": "sam3", "detector": {"resolution": 1008}}
    else:
        raise UserError(
            f"unknown model profile '{profile}' (expected one of {', '.join(PROFILES)})", "params.yaml", "model.profile"
        )
    model = Sam3VideoModel(detector, tracker, profile, config)
    model.train()
    return model
