"""One tracking step of SAM3's tracker, written for training as well as inference (Stage 2).

Upstream's ``Sam3TrackerBase.track_step`` cannot train (it needs attributes the class never sets, moves memories
with ``.cuda()`` and pins memory, so it fails on CPU, and it drops the multimask and IoU outputs the loss needs),
and its memory attention's ``use_act_checkpoint=True`` fails inside ``act_ckpt_utils`` (the layer's
``forward(*args, **kwds)`` has no named parameters). This module re-implements the step on the tracker's own
modules — same parameters, same maths as the SAM2 recipe:

1. ``clip_features``: image features of every frame of a clip, once: the frozen image trunk, then the tracker's
   neck (``sam2_convs``) and the SAM decoder's high-resolution projections (``conv_s0``/``conv_s1``).
2. ``condition_on_memory``: fuse the current frame's features with the memory bank (conditioning frames, the
   last ``num_maskmem - 1`` frames, object pointers) through the memory attention, optionally checkpointed
   per layer (``run_memory_attention``; gradients equal the unchecked ones).
3. ``track_frame``: prompt (GT mask as output, or points/box through the SAM heads) or propagate, then encode
   the new memory. Returns every output the SAM2 losses need (all candidate masks, IoU predictions, object
   score logits).

All functions are device-agnostic (CPU and CUDA) and keep the object batch in dimension 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as torch_checkpoint
from sam3.model.sam3_tracker_utils import get_1d_sine_pe, select_closest_cond_frames
from sam3.sam.transformer import RoPEAttention


@dataclass
class ClipFeatures:
    """Per-frame tracker features, frame-major: ``levels[i]`` is ``[T, C_i, H_i, W_i]`` (high-res first)."""

    levels: list[torch.Tensor]
    pos: list[torch.Tensor]

    @property
    def num_frames(self) -> int:
        return self.levels[-1].shape[0]

    def frame(self, t: int, batch: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Features of frame ``t`` expanded to ``batch`` objects (views, no copy). The positional encodings
        do not depend on the image, so one copy ``[1, C, H, W]`` serves every frame."""
        feats = [x[t : t + 1].expand(batch, *x.shape[1:]) for x in self.levels]
        pos = [p[:1].expand(batch, *p.shape[1:]) for p in self.pos]
        return feats, pos


@dataclass
class FrameOutput:
    """What one tracked frame produced (all tensors have the object batch in dim 0)."""

    multimasks: torch.Tensor  # [B, M, H, W] logits at image size (M = 3 with multimask output, else 1)
    ious: torch.Tensor  # [B, M] predicted IoU of each candidate
    object_score_logits: torch.Tensor  # [B, 1]
    masks: torch.Tensor  # [B, 1, H, W] the chosen mask's logits at image size
    obj_ptr: torch.Tensor  # [B, C]
    maskmem_features: torch.Tensor | None = None  # [B, mem_dim, h, w]
    maskmem_pos_enc: torch.Tensor | None = None
    from_prompt_mask: bool = False  # the GT mask was used as output (no prediction to supervise)
    steps: list = field(default_factory=list)  # earlier (multimasks, ious, object_score_logits) of correction rounds


def clip_features(video_model, images: torch.Tensor, train_trunk: bool = False, chunk: int = 0) -> ClipFeatures:
    """Image features of all frames of a clip, computed once. ``images``: ``[T, 3, S, S]`` normalised.

    The trunk runs without autograd unless it is trained (``train_trunk``); the tracker's neck (``sam2_convs``)
    and the SAM decoder's ``conv_s0``/``conv_s1`` always keep their graph so they can train. ``chunk`` > 0 runs
    the trunk on that many frames at a time (long videos at inference).
    """
    neck = video_model.detector.backbone.vision_backbone
    scalp = getattr(video_model.detector.backbone, "scalp", 1)
    tracker = video_model.tracker
    convs = list(neck.sam2_convs)
    if scalp > 0:
        convs = convs[:-scalp]  # the lowest resolution level is discarded, as upstream's SAM3VLBackbone does
    step = chunk if chunk > 0 else images.shape[0]
    parts = []
    for start in range(0, images.shape[0], step):
        with torch.set_grad_enabled(train_trunk and torch.is_grad_enabled()):
            trunk_out = neck.trunk(images[start : start + step])[-1]
        feats = [conv(trunk_out) for conv in convs]
        feats[0] = tracker.sam_mask_decoder.conv_s0(feats[0])
        feats[1] = tracker.sam_mask_decoder.conv_s1(feats[1])
        parts.append(feats)
    levels = [torch.cat([p[i] for p in parts]) if len(parts) > 1 else parts[0][i] for i in range(len(convs))]
    # positional encodings are computed on the neck outputs (before conv_s0/conv_s1), as upstream does
    pos = [neck.position_encoding(torch.empty(1, 1, *x.shape[-2:], device=x.device)).to(x.dtype) for x in levels]
    return ClipFeatures(levels=levels, pos=pos)


def temporal_pos_enc(tracker, rel_pos: list[int], max_abs_pos: int, device) -> torch.Tensor:
    """Object-pointer temporal encoding (upstream's ``_get_tpos_enc`` without ``pin_memory``, so CPU works)."""
    t_diff_max = max(max_abs_pos - 1, 1)
    pos = torch.tensor(rel_pos, dtype=torch.float32, device=device) / t_diff_max
    return tracker.obj_ptr_tpos_proj(get_1d_sine_pe(pos, dim=tracker.hidden_dim))


def _memory_layer(layer, tgt, memory, pos, query_pos, num_k_exclude_rope: int):
    kwargs = {}
    if isinstance(layer.cross_attn_image, RoPEAttention):
        kwargs["num_k_exclude_rope"] = num_k_exclude_rope
    return layer(tgt=tgt, memory=memory, dac=False, pos=pos, query_pos=query_pos, **kwargs)


def run_memory_attention(
    encoder,
    src: torch.Tensor,
    src_pos: torch.Tensor,
    prompt: torch.Tensor,
    prompt_pos: torch.Tensor,
    num_obj_ptr_tokens: int,
    checkpoint_layers: bool = False,
) -> torch.Tensor:
    """The forward of upstream's ``TransformerEncoderCrossAttention`` (seq-first in and out), with working
    per-layer activation checkpointing: each layer is recomputed in backward with the RNG state of its forward
    (dropout included), so gradients equal the unchecked ones."""
    output = src
    if encoder.pos_enc_at_input and src_pos is not None:
        output = output + 0.1 * src_pos
    if encoder.batch_first:
        output, src_pos = output.transpose(0, 1), src_pos.transpose(0, 1)
        prompt, prompt_pos = prompt.transpose(0, 1), prompt_pos.transpose(0, 1)
    for layer in encoder.layers:
        if checkpoint_layers and torch.is_grad_enabled():
            output = torch_checkpoint.checkpoint(
                _memory_layer,
                layer,
                output,
                prompt,
                prompt_pos,
                src_pos,
                num_obj_ptr_tokens,
                use_reentrant=False,
                preserve_rng_state=True,
            )
        else:
            output = _memory_layer(layer, output, prompt, prompt_pos, src_pos, num_obj_ptr_tokens)
    output = encoder.norm(output)
    if encoder.batch_first:
        output = output.transpose(0, 1)
    return output


def condition_on_memory(
    tracker,
    feat: torch.Tensor,
    pos: torch.Tensor,
    frame_idx: int,
    cond_outputs: dict[int, FrameOutput],
    prev_outputs: dict[int, FrameOutput],
    num_frames: int,
    checkpoint_layers: bool = False,
) -> torch.Tensor:
    """Fuse the top-level features ``feat`` ``[B, C, H, W]`` of frame ``frame_idx`` with the memory bank.

    Frames are indexed in processing order (a time-reversed clip is already reversed by the sampler), so the
    previous frames are ``frame_idx - 1, frame_idx - 2, ...`` as in SAM2 training.
    """
    B, C, H, W = feat.shape
    device = feat.device
    if not cond_outputs and not prev_outputs:
        return feat + tracker.no_mem_embed.view(1, C, 1, 1)

    num_maskmem = tracker.num_maskmem
    selected_cond, unselected_cond = select_closest_cond_frames(
        frame_idx, cond_outputs, tracker.max_cond_frames_in_attn, keep_first_cond_frame=tracker.keep_first_cond_frame
    )
    memories: list[tuple[int, FrameOutput]] = [(0, out) for out in selected_cond.values()]
    for t_pos in range(1, num_maskmem):
        prev = frame_idx - (num_maskmem - t_pos)
        out = prev_outputs.get(prev, unselected_cond.get(prev))
        if out is not None:
            memories.append((t_pos, out))

    prompt, prompt_pos = [], []
    for t_pos, out in memories:
        prompt.append(out.maskmem_features.flatten(2).permute(2, 0, 1))
        enc = out.maskmem_pos_enc.flatten(2).permute(2, 0, 1)
        prompt_pos.append(enc + tracker.maskmem_tpos_enc[num_maskmem - t_pos - 1])

    # object pointers: every selected conditioning frame, then up to max_obj_ptrs_in_encoder - 1 previous frames
    max_ptrs = min(num_frames, tracker.max_obj_ptrs_in_encoder)
    ptr_pos = [frame_idx - t for t in selected_cond]
    ptrs = [out.obj_ptr for out in selected_cond.values()]
    for t_diff in range(1, max_ptrs):
        t = frame_idx - t_diff
        if t < 0:
            break
        out = prev_outputs.get(t, unselected_cond.get(t))
        if out is not None:
            ptr_pos.append(t_diff)
            ptrs.append(out.obj_ptr)
    num_ptr_tokens = 0
    if ptrs:
        obj_ptrs = torch.stack(ptrs, dim=0)  # [P, B, C]
        obj_pos = temporal_pos_enc(tracker, ptr_pos, max_ptrs, device).unsqueeze(1).expand(-1, B, -1)
        mem_dim = tracker.mem_dim
        if mem_dim < C:  # split each pointer into C // mem_dim tokens
            obj_ptrs = obj_ptrs.reshape(-1, B, C // mem_dim, mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
            obj_pos = obj_pos.repeat_interleave(C // mem_dim, dim=0)
        prompt.append(obj_ptrs)
        prompt_pos.append(obj_pos.to(obj_ptrs.dtype))
        num_ptr_tokens = obj_ptrs.shape[0]

    src = feat.flatten(2).permute(2, 0, 1)
    src_pos = pos.flatten(2).permute(2, 0, 1)
    fused = run_memory_attention(
        tracker.transformer.encoder,
        src,
        src_pos,
        torch.cat(prompt, dim=0),
        torch.cat(prompt_pos, dim=0),
        num_ptr_tokens,
        checkpoint_layers=checkpoint_layers,
    )
    return fused.permute(1, 2, 0).reshape(B, C, H, W)


def _seq_first(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).permute(2, 0, 1)


def encode_memory(tracker, feat: torch.Tensor, masks_high_res: torch.Tensor, object_score_logits, from_points: bool):
    """Encode a frame's prediction into a memory (upstream ``_encode_new_memory``, which is device-agnostic)."""
    H, W = feat.shape[-2:]
    maskmem, maskmem_pos = tracker._encode_new_memory(
        image=None,
        current_vision_feats=[_seq_first(feat)],
        feat_sizes=[(H, W)],
        pred_masks_high_res=masks_high_res,
        object_score_logits=object_score_logits,
        is_mask_from_pts=from_points,
    )
    return maskmem, maskmem_pos[-1]


def track_frame(
    tracker,
    feats: list[torch.Tensor],
    pos: list[torch.Tensor],
    frame_idx: int,
    is_cond: bool,
    cond_outputs: dict[int, FrameOutput],
    prev_outputs: dict[int, FrameOutput],
    num_frames: int,
    point_inputs: dict | None = None,
    mask_inputs: torch.Tensor | None = None,
    correction_gt: torch.Tensor | None = None,
    correction_clicks: int = 0,
    generator: torch.Generator | None = None,
    checkpoint_layers: bool = False,
    run_mem_encoder: bool = True,
) -> FrameOutput:
    """Track one frame for a batch of objects. ``feats``/``pos``: the frame's levels ``[B, C, H, W]``.

    - ``mask_inputs`` ``[B, 1, S, S]`` (conditioning frame, GT mask prompt): the mask is the output (SAM2's
      ``use_mask_input_as_output_without_sam``); the SAM heads only produce the object pointer.
    - ``point_inputs`` (``point_coords [B, P, 2]`` in image pixels, ``point_labels [B, P]``; a box is two points
      labelled 2 and 3): prompt the SAM heads without memory (conditioning frame) — with ``correction_clicks``
      rounds that each add a click sampled from the error region against ``correction_gt``.
    - neither: propagate with memory.
    """
    top = feats[-1]
    high_res = feats[:-1]
    if mask_inputs is not None:
        low, high, ious, _, high_best, obj_ptr, obj_logits = tracker._use_mask_as_output(top, high_res, mask_inputs)
        out = FrameOutput(high, ious, obj_logits, high_best, obj_ptr, from_prompt_mask=True)
    else:
        if is_cond:
            pix = top + tracker.no_mem_embed.view(1, -1, 1, 1)
        else:
            pix = condition_on_memory(
                tracker, top, pos[-1], frame_idx, cond_outputs, prev_outputs, num_frames, checkpoint_layers
            )
        steps = []
        rounds = 1 + (correction_clicks if (point_inputs is not None and correction_gt is not None) else 0)
        for r in range(rounds):
            multimask = tracker._use_multimask(is_cond, point_inputs)
            _, high, ious, _, high_best, obj_ptr, obj_logits = tracker._forward_sam_heads(
                backbone_features=pix,
                point_inputs=point_inputs,
                mask_inputs=None,
                high_res_features=high_res,
                multimask_output=multimask,
            )
            if r + 1 < rounds:
                steps.append((high, ious, obj_logits))
                new_pts, new_labels = sample_correction_click(high_best.detach(), correction_gt, generator)
                point_inputs = {
                    "point_coords": torch.cat([point_inputs["point_coords"], new_pts], dim=1),
                    "point_labels": torch.cat([point_inputs["point_labels"], new_labels], dim=1),
                }
        out = FrameOutput(high, ious, obj_logits, high_best, obj_ptr, steps=steps)
    if run_mem_encoder:
        out.maskmem_features, out.maskmem_pos_enc = encode_memory(
            tracker, top, out.masks, out.object_score_logits, from_points=point_inputs is not None
        )
    return out


def sample_correction_click(pred_logits: torch.Tensor, gt: torch.Tensor, generator=None):
    """One corrective click per object from the error region: a false negative pixel becomes a positive click,
    a false positive one a negative click (uniformly over the error pixels, as SAM2's ``sample_random_points``).
    Objects without error get a padding point (label -1). Coordinates are ``(x, y)`` image pixels."""
    B = pred_logits.shape[0]
    pred = pred_logits[:, 0] > 0
    gt = gt[:, 0].bool()
    fn, fp = gt & ~pred, pred & ~gt
    error = fn | fp
    coords = torch.zeros(B, 1, 2, device=pred_logits.device)
    labels = -torch.ones(B, 1, dtype=torch.int32, device=pred_logits.device)
    W = pred.shape[-1]
    for b in range(B):
        idx = torch.nonzero(error[b].flatten(), as_tuple=False).flatten()
        if idx.numel() == 0:
            continue
        pick = idx[torch.randint(idx.numel(), (1,), generator=generator, device="cpu").item()].item()
        y, x = divmod(pick, W)
        coords[b, 0, 0], coords[b, 0, 1] = float(x), float(y)
        labels[b, 0] = 1 if bool(fn[b].flatten()[pick]) else 0
    return coords, labels


def resize_masks(masks: torch.Tensor, size: int) -> torch.Tensor:
    """``[B, 1, h, w]`` float/bool -> ``[B, 1, size, size]`` float (bilinear for logits, nearest for bool)."""
    if masks.shape[-2:] == (size, size):
        return masks.float()
    mode = "nearest" if masks.dtype == torch.bool else "bilinear"
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(masks.float(), size=(size, size), mode=mode, **kwargs)
