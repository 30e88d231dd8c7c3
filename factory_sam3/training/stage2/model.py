"""The Stage 2 training forward (ours; upstream sam3 has none): one clip -> SAM2 losses.

1. Image features of every clip frame once (frozen trunk, trainable tracker neck).
2. Conditioning frames (the clip's first frame, plus ``num_cond_frames - 1`` random others) get a prompt,
   drawn per clip from ``prompt_probs``: the GT mask (used as the output, as SAM2 does), a noisy box or sampled
   positive points (through the SAM heads, with ``correction_clicks`` extra rounds of clicks sampled from the
   error region). Additional conditioning frames always take the GT mask.
3. The other frames are propagated in clip order with the memory bank (``video_memory``), the memory
   attention optionally checkpointed per layer.
4. ``losses.clip_losses`` on every supervised, non-mask-prompted frame.

``ClipForward`` is an ``nn.Module`` around the video model so DDP can wrap it (``find_unused_parameters``:
which parameters receive gradients changes with the prompt type and correction rounds).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from factory_sam3.models import video_memory as vm
from factory_sam3.training.stage2 import losses
from factory_sam3.training.stage2.config import PROMPTS
from factory_sam3.training.stage2.data import ClipBatch


@dataclass
class ForwardOptions:
    prompt_probs: dict = field(default_factory=lambda: {"mask": 0.5, "box": 0.25, "points": 0.25})
    num_cond_frames: int = 1
    correction_clicks: int = 0
    num_points: int = 1  # positive points of a "points" prompt
    box_noise: float = 0.1  # box corner noise, as a fraction of the box side (SAM2: 0.1, capped at 20 px)
    box_noise_max_px: float = 20.0
    checkpoint_memory_attention: bool = False
    train_trunk: bool = False


def choose_prompt(rng: np.random.Generator, probs: dict) -> str:
    names = [p for p in PROMPTS if probs.get(p, 0) > 0]
    weights = np.array([float(probs[p]) for p in names])
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def box_prompt(masks: torch.Tensor, rng: np.random.Generator, noise: float, noise_max: float) -> dict:
    """Noisy GT boxes as SAM point prompts (corners labelled 2 and 3). ``masks`` ``[B, H, W]`` bool, non-empty."""
    B, H, W = masks.shape
    coords = torch.zeros(B, 2, 2)
    for b in range(B):
        ys, xs = torch.nonzero(masks[b], as_tuple=True)
        x0, x1, y0, y1 = xs.min().item(), xs.max().item(), ys.min().item(), ys.max().item()
        bw, bh = x1 - x0 + 1, y1 - y0 + 1
        jitter = rng.normal(0.0, 1.0, size=4) * noise * np.array([bw, bh, bw, bh])
        jitter = np.clip(jitter, -noise_max, noise_max)
        box = np.array([x0, y0, x1, y1], dtype=np.float64) + jitter
        box[[0, 2]] = np.clip(box[[0, 2]], 0, W - 1)
        box[[1, 3]] = np.clip(box[[1, 3]], 0, H - 1)
        coords[b] = torch.tensor(
            [[min(box[0], box[2]), min(box[1], box[3])], [max(box[0], box[2]), max(box[1], box[3])]]
        )
    labels = torch.tensor([[2, 3]], dtype=torch.int32).expand(B, 2).clone()
    return {"point_coords": coords.to(masks.device), "point_labels": labels.to(masks.device)}


def point_prompt(masks: torch.Tensor, rng: np.random.Generator, num_points: int) -> dict:
    """``num_points`` positive clicks per object, uniform over its GT mask."""
    B, H, W = masks.shape
    coords = torch.zeros(B, num_points, 2)
    for b in range(B):
        idx = torch.nonzero(masks[b].flatten(), as_tuple=False).flatten()
        picks = idx[torch.from_numpy(rng.integers(idx.numel(), size=num_points))]
        coords[b, :, 0] = (picks % W).float()
        coords[b, :, 1] = (picks // W).float()
    labels = torch.ones(B, num_points, dtype=torch.int32)
    return {"point_coords": coords.to(masks.device), "point_labels": labels.to(masks.device)}


class ClipForward(nn.Module):
    def __init__(self, video_model: nn.Module, options: ForwardOptions):
        super().__init__()
        self.model = video_model
        self.options = options

    def forward(self, batch: ClipBatch, rng: np.random.Generator, generator: torch.Generator | None = None) -> dict:
        opts = self.options
        tracker = self.model.tracker
        T, B = batch.masks.shape[:2]
        feats = vm.clip_features(self.model, batch.images, train_trunk=opts.train_trunk)

        extra = max(0, min(opts.num_cond_frames, T) - 1)
        cond_frames = [0] + (sorted((1 + rng.choice(T - 1, extra, replace=False)).tolist()) if extra else [])
        prompt = choose_prompt(rng, opts.prompt_probs)
        first = batch.masks[0, :, 0]
        if prompt != "mask" and not bool(first.flatten(1).any(-1).all()):
            prompt = "mask"  # an object cropped out of the first frame cannot be clicked or boxed
        cond, prev, outputs = {}, {}, {}
        order = cond_frames + [t for t in range(T) if t not in cond_frames]
        for t in order:
            f, p = feats.frame(t, B)
            is_cond = t in cond_frames
            kwargs = {}
            if is_cond and (t != 0 or prompt == "mask"):
                kwargs["mask_inputs"] = batch.masks[t].float()
            elif is_cond:
                if prompt == "box":
                    kwargs["point_inputs"] = box_prompt(first, rng, opts.box_noise, opts.box_noise_max_px)
                else:
                    kwargs["point_inputs"] = point_prompt(first, rng, opts.num_points)
                kwargs["correction_gt"] = batch.masks[t]
                kwargs["correction_clicks"] = opts.correction_clicks
                kwargs["generator"] = generator
            out = vm.track_frame(
                tracker,
                f,
                p,
                t,
                is_cond,
                cond,
                prev,
                T,
                checkpoint_layers=opts.checkpoint_memory_attention,
                **kwargs,
            )
            (cond if is_cond else prev)[t] = out
            outputs[t] = out
        num_objects = losses.num_objects_across_ranks(B, batch.masks.device)
        result = losses.clip_losses(outputs, batch.masks, batch.present, batch.supervised, num_objects)
        result["prompt"] = prompt
        result["cross_object_iou"] = cross_object_iou(outputs, cond)
        return result


@torch.no_grad()
def cross_object_iou(outputs: dict, cond: dict) -> float:
    """Mean IoU between the masks predicted for different objects of a clip on its propagated frames (NaN with one
    object): near 1 means the tracker ignores its prompt and segments the same region for every object."""
    scores = []
    for t, out in outputs.items():
        if t in cond or out.masks.shape[0] < 2:
            continue
        pred = (out.masks[:, 0] > 0).flatten(1)
        inter = (pred[:, None] & pred[None]).sum(-1).float()
        union = (pred[:, None] | pred[None]).sum(-1).float()
        i, j = torch.triu_indices(pred.shape[0], pred.shape[0], offset=1)
        keep = union[i, j] > 0
        scores.extend((inter[i, j][keep] / union[i, j][keep]).tolist())
    return float(np.mean(scores)) if scores else float("nan")
