"""Query selection for the tiny detector: its decoder queries start at the boxes its encoder proposes.

Why: sam3's decoder starts every query at a learned reference box. At SAM3's scale (200 queries, a GPU-month of
data) the queries learn where to look; the tiny model on CPU does not: its matched boxes stayed at GIoU ~0.1 over
11,000 pretraining images and segm AP at ~0.01 (benchmarks/RESULTS.md, "The detector: what was probed"), while
*dense* text-conditioned prediction learned within a few hundred steps. So, as two-stage Deformable DETR and DINO
do ("mixed query selection"), every encoder token (already fused with the prompt) proposes one box and one score for
the prompt; the decoder's queries keep their learned content embeddings but start at the ``num_queries`` best-scored
proposals. The proposals are supervised by sam3's own loss: the model hands them over as ``out["first_stage"]``, the
output ``Sam3LossWrapper`` already scores (suffix ``_fs``) with the same matcher, box and classification losses,
one-to-one and one-to-many (``*_o2m``), so Stage 1's Trainer trains them as it trains everything else.

Box-bounded masks (``box_bounded_masks``): each query's mask logits are kept inside its own predicted box and set to
``OUTSIDE`` elsewhere, as Mask R-CNN predicts masks within boxes. The tiny pixel decoder separates "this concept" from
background well (semantic IoU ~0.5) but not one look-alike instance from its neighbour; its box does. Measured on the
detector stage's weights (valid split, 60 images): segm AP 0.019 -> 0.053 (AP50 0.04 -> 0.17) from this alone.
It has no weights: the state dict is sam3's plus ``proposal_head.*``.

``QuerySelectionSam3Image`` is sam3's ``Sam3Image`` with only ``_run_decoder``, ``_run_segmentation_heads`` and
``_compute_matching`` extended; ``ProposalHead`` holds the new weights (state-dict keys ``proposal_head.*``).
"""

from __future__ import annotations

import torch
from sam3.model.box_ops import box_cxcywh_to_xyxy
from sam3.model.model_misc import MLP, DotProductScoring, inverse_sigmoid
from sam3.model.sam3_image import Sam3Image
from torch import nn


def _cell_centres(height: int, width: int, device, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres of a height x width grid in [0, 1]: (ys (H,), xs (W,))."""
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
    return ys, xs


class ProposalHead(nn.Module):
    """One box (cx, cy, w, h in [0, 1]) and one prompt score per encoder token.

    Each box starts as a ``prior_size`` square centred on its token (the box MLP's last layer is zero at init), so
    the first selections are the best-scored places, sized like a typical object."""

    def __init__(self, d_model: int, ffn_dim: int, prior_size: float = 0.1, generator: torch.Generator | None = None):
        super().__init__()
        self.prior_size = prior_size
        self.proj = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.box = MLP(d_model, d_model, 4, 3)
        self.scoring = DotProductScoring(
            d_model=d_model,
            d_proj=d_model,
            prompt_mlp=MLP(
                input_dim=d_model,
                hidden_dim=ffn_dim,
                output_dim=d_model,
                num_layers=2,
                residual=True,
                out_norm=nn.LayerNorm(d_model),
            ),
        )
        # initialised from its own generator: the modules sam3 builds draw the same random stream with or without it
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    bound = 1 / module.in_features**0.5
                    module.weight.uniform_(-bound, bound, generator=generator)
                    module.bias.uniform_(-bound, bound, generator=generator)
            last = self.box.layers[-1]
            last.weight.zero_()
            last.bias.zero_()

    def token_priors(self, height: int, width: int, device) -> torch.Tensor:
        """(H*W, 4) unsigmoided prior boxes, row-major as the encoder flattens its tokens."""
        cy, cx = torch.meshgrid(*_cell_centres(height, width, device), indexing="ij")
        size = torch.full_like(cx, self.prior_size)
        return inverse_sigmoid(torch.stack([cx, cy, size, size], -1).flatten(0, 1))

    def forward(self, memory, spatial_shapes, prompt, prompt_mask):
        """memory (HW, bs, d) -> scores (bs, HW, 1) and boxes (bs, HW, 4) in [0, 1]."""
        height, width = int(spatial_shapes[0, 0]), int(spatial_shapes[0, 1])
        tokens = self.norm(self.proj(memory.transpose(0, 1)))  # (bs, HW, d)
        boxes = (self.box(tokens) + self.token_priors(height, width, memory.device)).sigmoid()
        scores = self.scoring(tokens[None], prompt, prompt_mask)[0]
        return scores, boxes


OUTSIDE = -20.0  # mask logit outside a query's box (sigmoid ~2e-9)


def inside_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(..., 4) cxcywh boxes in [0, 1] -> (..., height, width) bool: pixel centres inside each box."""
    x0, y0, x1, y1 = box_cxcywh_to_xyxy(boxes).unbind(-1)
    ys, xs = _cell_centres(height, width, boxes.device, boxes.dtype)
    in_x = (xs >= x0[..., None]) & (xs <= x1[..., None])  # (..., W)
    in_y = (ys >= y0[..., None]) & (ys <= y1[..., None])  # (..., H)
    return in_y[..., :, None] & in_x[..., None, :]


class QuerySelectionSam3Image(Sam3Image):
    """``Sam3Image`` whose decoder queries start at the encoder's best proposals and whose instance masks stay in
    their boxes (see the module docstring).

    ``proposal_head`` must be set after construction (``attach_proposal_head``)."""

    proposal_head: ProposalHead
    box_bounded_masks: bool = True

    def _run_segmentation_heads(self, out, *args, **kwargs):
        super()._run_segmentation_heads(out, *args, **kwargs)
        if not self.box_bounded_masks:
            return
        for masks_key, boxes_key in (("pred_masks", "pred_boxes"), ("pred_masks_o2m", "pred_boxes_o2m")):
            if masks_key in out and boxes_key in out:
                masks = out[masks_key]
                keep = inside_boxes(out[boxes_key].detach(), *masks.shape[-2:])
                out[masks_key] = masks.masked_fill(~keep, OUTSIDE)

    def _run_decoder(self, pos_embed, memory, src_mask, out, prompt, prompt_mask, encoder_out):
        bs = memory.shape[1]
        decoder = self.transformer.decoder
        scores, boxes = self.proposal_head(memory, encoder_out["spatial_shapes"], prompt, prompt_mask)
        top = scores[..., 0].topk(decoder.num_queries, dim=1).indices  # (bs, Q)
        reference = boxes.gather(1, top[..., None].expand(-1, -1, 4)).detach().transpose(0, 1)  # (Q, bs, 4)
        tgt = decoder.query_embed.weight.unsqueeze(1).repeat(1, bs, 1)
        apply_dac = decoder.dac and self.training
        hs, reference_boxes, dec_presence_out, dec_presence_feats = decoder(
            tgt=tgt,
            memory=memory,
            memory_key_padding_mask=src_mask,
            pos=pos_embed,
            reference_boxes=reference,
            level_start_index=encoder_out["level_start_index"],
            spatial_shapes=encoder_out["spatial_shapes"],
            valid_ratios=encoder_out["valid_ratios"],
            tgt_mask=None,
            memory_text=prompt,
            text_attention_mask=prompt_mask,
            apply_dac=apply_dac,
        )
        hs = hs.transpose(1, 2)
        reference_boxes = reference_boxes.transpose(1, 2)
        if dec_presence_out is not None:
            dec_presence_out = dec_presence_out.transpose(1, 2)
        out["presence_feats"] = dec_presence_feats
        self._update_scores_and_boxes(out, hs, reference_boxes, prompt, prompt_mask, dec_presence_out=dec_presence_out)
        if self.training:
            # every token's proposal, one-to-one and one-to-many, for Sam3LossWrapper's "first_stage" output
            xyxy = box_cxcywh_to_xyxy(boxes)
            out["first_stage"] = {
                "pred_logits": scores,
                "pred_boxes": boxes,
                "pred_boxes_xyxy": xyxy,
                "pred_logits_o2m": scores,
                "pred_boxes_o2m": boxes,
                "pred_boxes_xyxy_o2m": xyxy,
            }
        return out, hs

    def _compute_matching(self, out, targets):
        super()._compute_matching(out, targets)
        if "first_stage" in out:
            out["first_stage"]["indices"] = self.matcher(out["first_stage"], targets)


def attach_proposal_head(model: QuerySelectionSam3Image, d_model: int, ffn_dim: int, seed: int) -> None:
    """Build the head without touching the global random stream (what is built after it, e.g. the video model's
    tracker, initialises as it would without it)."""
    with torch.random.fork_rng(devices=[]):
        model.proposal_head = ProposalHead(d_model, ffn_dim, generator=torch.Generator().manual_seed(seed))
