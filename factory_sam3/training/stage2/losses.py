"""SAM2's video-object-segmentation losses, as SAM2 weights them: focal 20, dice 1, IoU prediction 1, object
score 1. For each supervised frame (and each correction round on it):

- focal and dice on the predicted mask logits (image size) against the GT mask; with multimask output (3
  candidates) only the candidate with the lowest ``20 * focal + dice`` is supervised (SAM2's
  ``MultiStepMultiMasksAndIous``);
- IoU prediction: L1 between each candidate's predicted IoU and its actual IoU (all candidates);
- object score: BCE of the object-score logit against "object present in this frame";
- the mask, dice and IoU terms count only where the object is present (an absent object is taught by the
  object score alone).

Each term is summed over frames and correction rounds and divided by the number of objects (averaged across
DDP ranks, as SAM2 does), so a clip's loss is independent of how many objects it has.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

WEIGHTS = {"focal": 20.0, "dice": 1.0, "iou": 1.0, "object": 1.0}
COMPONENTS = tuple(WEIGHTS)


def focal_per_mask(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss averaged over pixels: ``[B, M, H, W]`` -> ``[B, M]``."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.flatten(2).mean(-1)


def dice_per_mask(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    prob = logits.sigmoid().flatten(2)
    target = target.flatten(2)
    numerator = 2 * (prob * target).sum(-1)
    denominator = prob.sum(-1) + target.sum(-1)
    return 1 - (numerator + 1) / (denominator + 1)


def actual_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pred = logits.flatten(2) > 0
    gt = target.flatten(2) > 0.5
    inter = (pred & gt).sum(-1).float()
    union = (pred | gt).sum(-1).float()
    return inter / union.clamp(min=1.0)


def frame_losses(multimasks, ious, object_logits, gt: torch.Tensor, present: torch.Tensor) -> dict:
    """Unnormalised (summed over objects) loss terms of one prediction. ``gt`` ``[B, 1, H, W]`` float,
    ``present`` ``[B]`` float."""
    multimasks = multimasks.float()
    target = gt.expand_as(multimasks)
    focal = focal_per_mask(multimasks, target)
    dice = dice_per_mask(multimasks, target)
    with torch.no_grad():
        true_iou = actual_iou(multimasks, target)
    iou = (ious.float() - true_iou).abs().mean(-1)
    if multimasks.shape[1] > 1:
        best = torch.argmin(focal * WEIGHTS["focal"] + dice * WEIGHTS["dice"], dim=1, keepdim=True)
        focal = focal.gather(1, best)
        dice = dice.gather(1, best)
    focal, dice = focal[:, 0], dice[:, 0]
    obj = F.binary_cross_entropy_with_logits(object_logits.float()[:, 0], present, reduction="none")
    return {
        "focal": (focal * present).sum(),
        "dice": (dice * present).sum(),
        "iou": (iou * present).sum(),
        "object": obj.sum(),
    }


def num_objects_across_ranks(num: int, device) -> float:
    """SAM2's normaliser: the mean number of objects per rank (at least 1)."""
    value = torch.tensor(float(num), device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(value)
        value = value / dist.get_world_size()
    return max(float(value.item()), 1.0)


def clip_losses(
    frame_outputs: dict, gt_masks: torch.Tensor, present: torch.Tensor, supervised: torch.Tensor, num_objects: float
) -> dict:
    """Total loss of a clip. ``frame_outputs``: frame index -> ``FrameOutput``; ``gt_masks`` ``[T, B, 1, H, W]``;
    ``present`` ``[T, B]``; ``supervised`` ``[T]`` bool (annotated frames). Returns each weighted component,
    ``loss`` (their sum) and the raw component values under ``raw_*``."""
    device = gt_masks.device
    terms = {k: torch.zeros((), device=device) for k in COMPONENTS}
    for t, out in frame_outputs.items():
        if out.from_prompt_mask or not bool(supervised[t]):
            continue
        gt = gt_masks[t].float()
        if out.multimasks.shape[-2:] != gt.shape[-2:]:
            gt = F.interpolate(gt, size=out.multimasks.shape[-2:], mode="nearest")
        for multimasks, ious, logits in [*out.steps, (out.multimasks, out.ious, out.object_score_logits)]:
            for k, v in frame_losses(multimasks, ious, logits, gt, present[t].float()).items():
                terms[k] = terms[k] + v
    result = {}
    total = torch.zeros((), device=device)
    for k in COMPONENTS:
        raw = terms[k] / num_objects
        result[f"raw_{k}"] = raw.detach()
        weighted = raw * WEIGHTS[k]
        result[k] = weighted
        total = total + weighted
    result["loss"] = total
    return result
