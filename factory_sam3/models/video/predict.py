"""The video model's inference: ``track`` (semi-supervised VOS, one propagation pass per video)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from factory_sam3.models import video_memory as vm
from factory_sam3.models.video.build import IMAGE_MEAN, IMAGE_STD, Sam3VideoModel

# ---------------------------------------------------------------------------------------------- inference


def preprocess_frames(frames: list[np.ndarray], size: int, device) -> torch.Tensor:
    """RGB uint8 HxWx3 frames -> ``[T, 3, size, size]`` normalised as SAM3 expects."""
    out = []
    for i, frame in enumerate(frames):
        arr = np.asarray(frame)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"frame {i}: expected an HxWx3 uint8 RGB array, got {arr.shape} {arr.dtype}")
        # decoded frames may be read-only views: copy those rather than hand torch memory it must not write
        out.append(torch.from_numpy(arr if arr.flags.writeable else arr.copy()).permute(2, 0, 1))
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
                    out = vm.track_frame(
                        tracker,
                        f,
                        p,
                        0,
                        is_cond=True,
                        cond_outputs={},
                        prev_outputs={},
                        num_frames=group.num_frames,
                        mask_inputs=prompt,
                    )
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
        pix.append(
            vm.condition_on_memory(
                tracker,
                top[offset : offset + n],
                pos[-1][offset : offset + n],
                k,
                group.cond,
                group.prev,
                group.num_frames,
            )
        )
        offset += n
    _, high, ious, _, high_best, obj_ptr, obj_logits = tracker._forward_sam_heads(
        backbone_features=torch.cat(pix),
        point_inputs=None,
        mask_inputs=None,
        high_res_features=high_res,
        multimask_output=tracker._use_multimask(False, None),
    )
    maskmem, maskmem_pos = vm.encode_memory(tracker, top, high_best, obj_logits, from_points=False)
    outputs, offset = [], 0
    for group, n in zip(groups, sizes):
        part = slice(offset, offset + n)
        offset += n
        out = vm.FrameOutput(
            high[part],
            ious[part],
            obj_logits[part],
            high_best[part],
            obj_ptr[part],
            maskmem_features=maskmem[part],
            maskmem_pos_enc=maskmem_pos[part],
        )
        k = t - group.start
        group.prev[k] = out
        # older frames never enter the memory again (as the per-group loop dropped them)
        group.prev.pop(k - tracker.num_maskmem - tracker.max_obj_ptrs_in_encoder, None)
        outputs.append((group, out))
    return outputs
