"""Tracker pretraining on generic clips: SAM3's tracker learns to follow its prompt with memory.

The same forward and losses as Stage 2 (``training.stage2.model.ClipForward``, SAM2's recipe: focal 20 /
dice 1 / IoU 1 / object score 1), on clips drawn from ``pretrain.generic``, from random weights, the image trunk
training with the tracker (as SAM 2 trains its image encoder with its memory modules; the detector heads are then
trained on this trunk, frozen, so the tracker stays valid): every object visible on a clip's first frame is
prompted there with its ground-truth mask and tracked through the clip. All objects of a clip are one
batch, so look-alikes are prompted side by side and a prompt-independent mask scores badly for all of them.

``locality_init_`` is what makes this learnable in CPU minutes (measured in benchmarks/RESULTS.md): the memory
attention's query and key biases start equal and large, so under RoPE every query attends to the memory at its
own position from step 0 (a copy-forward prior) instead of averaging the whole memory bank, which washes out
where the prompt was and lets the decoder settle on a prompt-free foreground segmenter first (cross-object IoU
1.0, the failure every earlier attempt ended in).

Resumable: a checkpoint every ``save_every`` steps in ``runs/pretrain_tracker/<settings hash>/``; each step's
clip comes from ``rng([seed, step])``, so a resumed run ends where an uninterrupted one does.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from factory_sam3.errors import UserError
from factory_sam3.io import load_torch_file
from factory_sam3.models import video as video_models
from factory_sam3.pretrain import generic
from factory_sam3.training.common import progress_line
from factory_sam3.training.stage2 import losses
from factory_sam3.training.stage2.data import ClipBatch
from factory_sam3.training.stage2.model import ClipForward, ForwardOptions

MIN_PIXELS = 20  # an object smaller than this on the prompt frame is not prompted


@dataclass
class TrackerSettings:
    """pretrain/params.yaml ``tracker``."""

    steps: int = 1500
    lr: float = 1.0e-3
    weight_decay: float = 0.05
    warmup: int = 50
    grad_clip: float = 1.0
    frames: int = 4  # frames per training clip
    max_objects: int = 6  # objects prompted per clip (all visible ones up to this)
    speed: list = field(default_factory=lambda: [0.5, 8.0])  # px per frame at 224 px, drawn per clip
    prompt_probs: dict = field(default_factory=lambda: {"mask": 1.0})
    locality: float = 3.0  # memory-attention query/key bias at init (0 = upstream's init)
    trunk_lr_scale: float = 1.0  # image trunk's lr relative to ``lr`` (0 = frozen, as Stage 2 keeps it)
    focal_weight: float = 20.0  # SAM2's
    seed: int = 0
    eval_every: int = 250
    eval_clips: int = 16
    eval_frames: int = 8
    save_every: int = 50
    log_every: int = 25
    cpu_threads: int = 1

    def check(self, params_file) -> None:
        if self.steps < 1 or self.frames < 2 or self.max_objects < 1:
            raise UserError(
                "'tracker.steps' >= 1, 'tracker.frames' >= 2 and 'tracker.max_objects' >= 1 required", params_file
            )

    def key(self) -> str:
        payload = {
            k: v
            for k, v in asdict(self).items()
            if k not in ("eval_every", "log_every", "save_every", "cpu_threads", "eval_clips")
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def locality_init_(tracker, strength: float) -> None:
    """Equal, large query/key biases in every memory cross-attention (see the module docstring)."""
    if strength <= 0:
        return
    for layer in tracker.transformer.encoder.layers:
        attn = layer.cross_attn_image
        with torch.no_grad():
            attn.q_proj.bias.fill_(strength)
            attn.k_proj.bias.fill_(strength)


def to_batch(frames: np.ndarray, masks: np.ndarray, max_objects: int, rng: np.random.Generator) -> ClipBatch | None:
    """A generic clip -> ``ClipBatch`` of the objects visible on frame 0 (at most ``max_objects``)."""
    visible = [i for i in range(masks.shape[1]) if masks[0, i].sum() >= MIN_PIXELS]
    if not visible:
        return None
    if len(visible) > max_objects:
        visible = sorted(rng.choice(visible, size=max_objects, replace=False).tolist())
    images = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(video_models.IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(video_models.IMAGE_STD).view(1, 3, 1, 1)
    m = torch.from_numpy(masks[:, visible])
    return ClipBatch(
        images=(images - mean) / std,
        masks=m[:, :, None],
        present=m.flatten(2).any(-1),
        supervised=torch.ones(len(frames), dtype=torch.bool),
        track_ids=visible,
        frame_indices=list(range(len(frames))),
        video="generic",
    )


def heldout_clips(seed: int, count: int, num_frames: int, speed=(1.0, 8.0)) -> list:
    rng = np.random.default_rng(seed)
    return [generic.clip_sample(rng, num_frames, speed=tuple(speed)) for _ in range(count)]


@torch.no_grad()
def evaluate_tracking(model, clips) -> dict:
    """Mask-prompted tracking (``models.video.track``) on generic clips: every object visible on frame 0 is
    prompted with its mask there. ``J``: mean IoU over (object, frame) pairs after the prompt where the object
    is visible; ``copy_J``: the prompt copied forward on the same pairs; ``cross_object_iou``: mean IoU between
    the masks predicted for different objects on one frame (``gt_cross_object_iou``: the ground truth's)."""
    from factory_sam3.evaluation.metrics import region_similarity
    from factory_sam3.training.stage2.train import cross_object_iou

    ours, copy, cross, gt_cross = [], [], [], []
    objects = 0
    for frames, masks, _ in clips:
        visible = [i for i in range(masks.shape[1]) if masks[0, i].sum() >= MIN_PIXELS]
        if not visible:
            continue
        objects += len(visible)
        pred = video_models.track(model, list(frames), {i: (0, masks[0, i]) for i in visible})
        T = len(frames)
        for i in visible:
            for t in range(1, T):
                if masks[t, i].any():
                    ours.append(region_similarity(pred[i][t], masks[t, i]))
                    copy.append(region_similarity(masks[0, i], masks[t, i]))
        if len(visible) > 1:
            truth = {i: [masks[t, i] for t in range(T)] for i in visible}
            cross.append(cross_object_iou(pred, list(range(1, T))))
            gt_cross.append(cross_object_iou(truth, list(range(1, T))))

    def mean(values):
        values = [v for v in values if not np.isnan(v)]
        return round(float(np.mean(values)), 4) if values else None

    return {
        "J": mean(ours),
        "copy_J": mean(copy),
        "cross_object_iou": mean(cross),
        "gt_cross_object_iou": mean(gt_cross),
        "n_clips": len(clips),
        "n_objects": objects,
        "n_object_frames": len(ours),
    }


def _lr_factor(step: int, settings: TrackerSettings) -> float:
    if step < settings.warmup:
        return (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def prepare_model(settings: TrackerSettings):
    """The tiny video model from random weights with the locality prior in its tracker. What trains: the tracker,
    its neck and (``trunk_lr_scale`` > 0) the image trunk."""
    model = video_models.build_video_model("tiny", seed=settings.seed)
    locality_init_(model.tracker, settings.locality)
    trunk = "detector.backbone.vision_backbone.trunk."
    for name, param in model.named_parameters():
        param.requires_grad_(
            name.startswith("tracker.")
            or ".sam2_convs." in name
            or (settings.trunk_lr_scale > 0 and name.startswith(trunk))
        )
    return model


def train(
    settings: TrackerSettings, run_dir: Path, log_metrics: Callable[[dict, int], None] = lambda m, s: None
) -> tuple:
    """Train (or resume) and return ``(model, history, evals)``."""
    torch.set_num_threads(max(1, settings.cpu_threads))
    model = prepare_model(settings)
    losses.WEIGHTS["focal"] = float(settings.focal_weight)
    train_trunk = settings.trunk_lr_scale > 0
    forward = ClipForward(model, ForwardOptions(prompt_probs=dict(settings.prompt_probs), train_trunk=train_trunk))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    groups = []
    for is_trunk in (False, True):
        scale = settings.trunk_lr_scale if is_trunk else 1.0
        for decay in (True, False):
            chosen = [
                p
                for n, p in named
                if (n.startswith("detector.") and ".sam2_convs." not in n) == is_trunk and (p.ndim > 1) == decay
            ]
            if chosen:
                groups.append(
                    {
                        "params": chosen,
                        "weight_decay": settings.weight_decay if decay else 0.0,
                        "lr": settings.lr * scale,
                    }
                )
    optimizer = torch.optim.AdamW(groups, lr=settings.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, settings))
    held = heldout_clips(10_000 + settings.seed, settings.eval_clips, settings.eval_frames)

    checkpoint = run_dir / "checkpoint.pt"
    history: list[dict] = []
    evals: list[dict] = []
    start = 0
    if checkpoint.is_file():
        state = load_torch_file(checkpoint, "cannot resume from a broken checkpoint", "; delete it to start over")
        model.load_state_dict(state["model"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, evals, start = json.loads(state["history"]), json.loads(state["evals"]), int(state["step"])
        print(f"pretrain tracker: resuming at step {start} from {checkpoint}", file=sys.stderr, flush=True)
    elif settings.eval_every:
        evals.append({"step": 0, **evaluate_tracking(model, held)})
        log_metrics({f"heldout_{k}": v for k, v in evals[-1].items() if isinstance(v, float)}, 0)

    model.train()
    if not train_trunk:
        model.detector.eval()
    began = time.monotonic()
    window: list[dict] = []
    for step in range(start, settings.steps):
        rng = np.random.default_rng([settings.seed, step])
        torch.manual_seed(settings.seed * 1_000_003 + step)
        batch = None
        while batch is None:
            frames, masks, _ = generic.clip_sample(rng, settings.frames, speed=tuple(settings.speed))
            batch = to_batch(frames, masks, settings.max_objects, rng)
        out = forward(batch, rng)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        optimizer.step()
        scheduler.step()
        row = {
            "step": step + 1,
            "loss": float(out["loss"].detach()),
            **{k[4:]: float(out[k]) for k in out if k.startswith("raw_")},
            "lr": scheduler.get_last_lr()[0],
        }
        history.append(row)
        window.append(row)
        done = step + 1
        if done % settings.log_every == 0 or done == settings.steps:
            mean = {k: float(np.mean([r[k] for r in window])) for k in row if k != "step"}
            window = []
            log_metrics(mean, done)
            rate = (time.monotonic() - began) / max(1, done - start)
            values = f"loss {mean['loss']:.3f}  dice {mean['dice']:.3f}"
            print(progress_line("pretrain tracker", done, settings.steps, rate, values), file=sys.stderr, flush=True)
        if settings.eval_every and (done % settings.eval_every == 0 or done == settings.steps):
            evals.append({"step": done, **evaluate_tracking(model, held)})
            model.train()
            if not train_trunk:
                model.detector.eval()
            log_metrics({f"heldout_{k}": v for k, v in evals[-1].items() if isinstance(v, float)}, done)
            print(f"pretrain tracker: held-out at step {done}: " + json.dumps(evals[-1]), file=sys.stderr, flush=True)
        if done % settings.save_every == 0 or done == settings.steps:
            run_dir.mkdir(parents=True, exist_ok=True)
            tmp = checkpoint.with_suffix(".tmp")
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "step": done,
                    "history": json.dumps(history),
                    "evals": json.dumps(evals),
                },
                tmp,
            )
            tmp.replace(checkpoint)
    return model, history, evals
