"""The `tiny` profile: SAM3's image model built from sam3's OWN classes at small dimensions.

Same architecture as ``sam3.model_builder.build_sam3_image_model`` (ViT trunk with RoPE and
windowed + global attention blocks, SimpleFPN neck, VE text encoder, fusion encoder, DAC decoder with
a presence token, dot-product scoring, geometry encoder, pixel decoder + segmentation head), so every
module name and state-dict key matches the full model; only widths, depths and the resolution shrink.
Random init: it trains on CPU in minutes (tests and the embedded default run).

Stage 2 and evaluation reuse it::

    from factory_sam3.models.tiny import TINY_CONFIG, build_tiny_image_model
    model = build_tiny_image_model()            # Sam3Image, train mode, CPU
    TINY_CONFIG.resolution, TINY_CONFIG.d_model  # 224 px input, 64-d features (stride 14)

``TinyConfig`` is the one place the tiny dimensions live; ``dataclasses.replace(TINY_CONFIG, ...)``
gives variants (e.g. a different resolution: it must be a multiple of ``patch_size`` whose patch grid
is a multiple of ``window_size``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from factory_sam3.models.assets import bpe_path as default_bpe_path


@dataclass(frozen=True)
class TinyConfig:
    resolution: int = 224  # input side (px); patch grid = resolution / patch_size
    patch_size: int = 14  # as SAM3 (stride 14)
    embed_dim: int = 96  # ViT width (SAM3: 1024)
    depth: int = 4  # ViT blocks (SAM3: 32)
    num_heads: int = 4
    mlp_ratio: float = 4.0
    window_size: int = 8  # windowed blocks attend in 8x8 patch windows (SAM3: 24)
    global_att_blocks: tuple = (1, 3)  # the others are windowed (SAM3: 7, 15, 23, 31)
    d_model: int = 64  # neck / fusion encoder / decoder width (SAM3: 256)
    heads: int = 4  # attention heads in encoder / decoder (SAM3: 8)
    ffn_dim: int = 256  # encoder / decoder feed-forward (SAM3: 2048)
    encoder_layers: int = 2  # fusion encoder (SAM3: 6)
    decoder_layers: int = 2  # decoder (SAM3: 6)
    num_queries: int = 10  # object queries (SAM3: 200); the synthetic frames hold <= 8 objects, and 10
    # queries learn in 315 CPU steps where 50 stayed at segm AP 0
    geometry_layers: int = 1  # geometry (box prompt) encoder (SAM3: 3)
    text_width: int = 64  # text transformer width (SAM3: 1024); the 49408-token embedding dominates params
    text_heads: int = 4
    text_layers: int = 2  # (SAM3: 24)
    text_context_length: int = 32  # as SAM3
    upsampling_stages: int = 3  # pixel decoder (as SAM3)
    dropout: float = 0.0  # (SAM3: 0.1) no regularisation needed for minutes of training; saves CPU
    pooled_text_fusion: bool = True  # the fusion encoder adds the pooled prompt to every image token (the
    # TransformerEncoderFusion default; SAM3's builder turns it off): with a small
    # text encoder trained from scratch it gives the image tokens the prompt at once
    token_init_std: float = 1.0  # text token embedding init (CLIP: 0.02). At 0.02 the concept names' token
    # features start at cosine 0.58 from one another, at 1.0 at 0.07: the detector
    # tells the prompts apart from step 0 (benchmarks/RESULTS.md, the detector)
    query_selection: bool = True  # decoder queries start at the encoder tokens' best box proposals (two-stage
    # DETR / DINO), not at learned boxes: models/query_selection.py says why
    box_bounded_masks: bool = True  # each query's mask stays inside its predicted box (query_selection.py)
    act_ckpt: bool = False  # activation checkpointing of trunk/text/heads (the fusion encoder and
    # decoder always checkpoint in training: upstream asserts it)

    @property
    def feature_size(self) -> int:
        return self.resolution // self.patch_size


TINY_CONFIG = TinyConfig()


def _attention(cfg: TinyConfig, dropout: float, batch_first: bool | None):
    from sam3.model.model_misc import MultiheadAttentionWrapper

    kwargs = {"num_heads": cfg.heads, "dropout": dropout, "embed_dim": cfg.d_model}
    if batch_first is not None:
        kwargs["batch_first"] = batch_first
    return MultiheadAttentionWrapper(**kwargs)


def init_text_encoder_(text_encoder: nn.Module, token_std: float = 0.02) -> None:
    """Initialise the text encoder parameters sam3 allocates with ``torch.empty`` and never fills.

    ``TextTransformer.positional_embedding`` and ``.text_projection`` are ``torch.empty``: with random
    init (no checkpoint) they hold garbage, often NaN/inf, and the first forward returns NaN. CLIP's own
    init: N(0, 0.01) for positions, N(0, width^-0.5) for the projection; tokens N(0, ``token_std``).
    """
    encoder = text_encoder.encoder
    with torch.no_grad():
        nn.init.normal_(encoder.positional_embedding, std=0.01)
        if isinstance(encoder.text_projection, nn.Parameter):
            nn.init.normal_(encoder.text_projection, std=encoder.width**-0.5)
        nn.init.normal_(encoder.token_embedding.weight, std=token_std)


def build_tiny_image_model(
    cfg: TinyConfig = TINY_CONFIG,
    bpe_path: str | None = None,
    train: bool = True,
    enable_segmentation: bool = True,
    seed: int | None = 0,
) -> nn.Module:
    """Build a randomly initialised ``sam3.model.sam3_image.Sam3Image`` at ``cfg``'s dimensions.

    ``train`` attaches the BinaryHungarianMatcherV2 the model needs in training (as upstream's
    ``eval_mode=False``); ``seed`` makes the random init reproducible (None: leave the RNG alone).
    """
    from sam3.model.decoder import TransformerDecoder, TransformerDecoderLayer
    from sam3.model.encoder import TransformerEncoderFusion, TransformerEncoderLayer
    from sam3.model.geometry_encoders import SequenceGeometryEncoder
    from sam3.model.maskformer_segmentation import PixelDecoder, UniversalSegmentationHead
    from sam3.model.model_misc import MLP, DotProductScoring, TransformerWrapper
    from sam3.model.necks import Sam3DualViTDetNeck
    from sam3.model.position_encoding import PositionEmbeddingSine
    from sam3.model.sam3_image import Sam3Image
    from sam3.model.text_encoder_ve import VETextEncoder
    from sam3.model.tokenizer_ve import SimpleTokenizer
    from sam3.model.vitdet import ViT
    from sam3.model.vl_combiner import SAM3VLBackbone

    if cfg.resolution % cfg.patch_size or cfg.feature_size % cfg.window_size:
        raise ValueError(
            f"tiny resolution {cfg.resolution} must be a multiple of patch_size {cfg.patch_size} "
            f"with a patch grid divisible by window_size {cfg.window_size}"
        )
    if seed is not None:
        torch.manual_seed(seed)
    d = cfg.d_model

    def pos_enc():
        # no precompute_resolution: upstream precomputes on device="cuda" (see sam3_compat)
        return PositionEmbeddingSine(num_pos_feats=d, normalize=True, scale=None, temperature=10000)

    trunk = ViT(
        img_size=cfg.resolution,
        pretrain_img_size=cfg.resolution,
        patch_size=cfg.patch_size,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        norm_layer="LayerNorm",
        drop_path_rate=0.0,
        qkv_bias=True,
        use_abs_pos=True,
        tile_abs_pos=True,
        global_att_blocks=cfg.global_att_blocks,
        rel_pos_blocks=(),
        use_rope=True,
        use_interp_rope=True,
        window_size=cfg.window_size,
        pretrain_use_cls_token=True,
        retain_cls_token=False,
        ln_pre=True,
        ln_post=False,
        return_interm_layers=False,
        bias_patch_embed=False,
        use_act_checkpoint=cfg.act_ckpt,
    )
    neck = Sam3DualViTDetNeck(position_encoding=pos_enc(), d_model=d, scale_factors=[4.0, 2.0, 1.0, 0.5], trunk=trunk)
    text = VETextEncoder(
        tokenizer=SimpleTokenizer(bpe_path=bpe_path or str(default_bpe_path())),
        d_model=d,
        width=cfg.text_width,
        heads=cfg.text_heads,
        layers=cfg.text_layers,
        context_length=cfg.text_context_length,
        use_act_checkpoint=cfg.act_ckpt,
    )
    init_text_encoder_(text, cfg.token_init_std)
    backbone = SAM3VLBackbone(visual=neck, text=text, scalp=1)

    encoder = TransformerEncoderFusion(
        layer=TransformerEncoderLayer(
            activation="relu",
            d_model=d,
            dim_feedforward=cfg.ffn_dim,
            dropout=cfg.dropout,
            pos_enc_at_attn=True,
            pos_enc_at_cross_attn_keys=False,
            pos_enc_at_cross_attn_queries=False,
            pre_norm=True,
            self_attention=_attention(cfg, cfg.dropout, True),
            cross_attention=_attention(cfg, cfg.dropout, True),
        ),
        num_layers=cfg.encoder_layers,
        d_model=d,
        num_feature_levels=1,
        frozen=False,
        use_act_checkpoint=True,  # upstream asserts it in training (encoder.py, decoder.py)
        add_pooled_text_to_img_feat=False,  # switched on below, without shifting the random stream
        pool_text_with_mask=True,
    )
    decoder = TransformerDecoder(
        layer=TransformerDecoderLayer(
            activation="relu",
            d_model=d,
            dim_feedforward=cfg.ffn_dim,
            dropout=cfg.dropout,
            cross_attention=_attention(cfg, cfg.dropout, None),
            n_heads=cfg.heads,
            use_text_cross_attention=True,
        ),
        num_layers=cfg.decoder_layers,
        num_queries=cfg.num_queries,
        return_intermediate=True,
        box_refine=True,
        num_o2m_queries=0,
        dac=True,
        boxRPB="log",
        d_model=d,
        frozen=False,
        interaction_layer=None,
        dac_use_selfatt_ln=True,
        resolution=None,  # upstream precomputes box-RPB coords on device="cuda" when given
        stride=None,
        use_act_checkpoint=True,  # asserted in training upstream
        presence_token=True,
    )
    transformer = TransformerWrapper(encoder=encoder, decoder=decoder, d_model=d)

    scoring = DotProductScoring(
        d_model=d,
        d_proj=d,
        prompt_mlp=MLP(
            input_dim=d,
            hidden_dim=cfg.ffn_dim,
            output_dim=d,
            num_layers=2,
            dropout=cfg.dropout,
            residual=True,
            out_norm=nn.LayerNorm(d),
        ),
    )
    segmentation_head = None
    if enable_segmentation:
        segmentation_head = UniversalSegmentationHead(
            hidden_dim=d,
            upsampling_stages=cfg.upsampling_stages,
            aux_masks=False,
            presence_head=False,
            dot_product_scorer=None,
            act_ckpt=cfg.act_ckpt,
            cross_attend_prompt=_attention(cfg, 0.0, None),
            pixel_decoder=PixelDecoder(
                num_upsampling_stages=cfg.upsampling_stages, interpolation_mode="nearest", hidden_dim=d
            ),
        )
    geometry = SequenceGeometryEncoder(
        pos_enc=pos_enc(),
        encode_boxes_as_points=False,
        points_direct_project=True,
        points_pool=True,
        points_pos_enc=True,
        boxes_direct_project=True,
        boxes_pool=True,
        boxes_pos_enc=True,
        d_model=d,
        num_layers=cfg.geometry_layers,
        layer=TransformerEncoderLayer(
            activation="relu",
            d_model=d,
            dim_feedforward=cfg.ffn_dim,
            dropout=cfg.dropout,
            pos_enc_at_attn=False,
            pre_norm=True,
            self_attention=_attention(cfg, cfg.dropout, False),
            pos_enc_at_cross_attn_queries=False,
            pos_enc_at_cross_attn_keys=True,
            cross_attention=_attention(cfg, cfg.dropout, False),
        ),
        use_act_ckpt=cfg.act_ckpt,
        add_cls=True,
        add_post_encode_proj=True,
    )
    matcher = None
    if train:
        from sam3.train.matcher import BinaryHungarianMatcherV2

        matcher = BinaryHungarianMatcherV2(
            focal=True, cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, alpha=0.25, gamma=2, stable=False
        )
    from factory_sam3.models.query_selection import QuerySelectionSam3Image

    model = (QuerySelectionSam3Image if cfg.query_selection else Sam3Image)(
        backbone=backbone,
        transformer=transformer,
        input_geometry_encoder=geometry,
        segmentation_head=segmentation_head,
        num_feature_levels=1,
        o2m_mask_predict=True,
        dot_prod_scoring=scoring,
        use_instance_query=False,
        multimask_output=True,
        use_act_checkpoint_seg_head=cfg.act_ckpt,
        inst_interactive_predictor=None,
        matcher=matcher,
    )
    if cfg.pooled_text_fusion:
        # added after everything else, from its own generator: the modules built after the encoder draw the same
        # random numbers with or without it (the pretrained tracker's init depends on that stream)
        proj = nn.Linear(d, d)
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
        bound = 1 / d**0.5  # nn.Linear's default uniform init
        with torch.no_grad():
            proj.weight.uniform_(-bound, bound, generator=generator)
            proj.bias.uniform_(-bound, bound, generator=generator)
        encoder.add_pooled_text_to_img_feat = True
        encoder.text_pooling_proj = proj
    if cfg.query_selection:
        from factory_sam3.models.query_selection import attach_proposal_head

        attach_proposal_head(model, d, cfg.ffn_dim, seed=1 if seed is None else seed + 1)
        model.box_bounded_masks = cfg.box_bounded_masks
    if not train:
        model.eval()
    return model


def tiny_config_dict(cfg: TinyConfig = TINY_CONFIG) -> dict:
    return dataclasses.asdict(cfg)
