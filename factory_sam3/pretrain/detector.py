"""Detector pretraining: text-prompted detection of the generic concepts (``pretrain.generic_coco`` draws the data).

``train`` teaches fresh detector heads and text encoder the concept names on the tracker stage's frozen trunk, with
the Stage 1 config's own data pipeline and loss (configs/stage1, ``Sam3LossWrapper``), in two phases (below);
``export_detector`` writes the result in Stage 1's export layout.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from factory_sam3.io import atomic_dir, atomic_file, load_torch_file, write_json
from factory_sam3.pretrain.generic_coco import categories

# --- training -------------------------------------------------------------------------------------------------------
# Two phases on the tracker's frozen trunk, measured in benchmarks/RESULTS.md ("The detector: what was probed"):
#   dense:  the segmentation head alone learns text-conditioned semantic masks (BCE with positives x5 + dice): the
#           text x image interaction appears here within a few hundred steps, where sam3's sparse heads (presence
#           token, queries) stay at the prior for thousands;
#   full:   sam3's own loss (Sam3LossWrapper from configs/stage1: matching, boxes, IoU-aware classification, presence,
#           masks) plus the dense term x ``aux_semantic``, which keeps what the first phase learned (without it the
#           full loss wipes it out in 200 steps).
# Resumable: the state is written every ``save_every`` steps; a stopped run continues where it was.

TRUNK = "backbone.vision_backbone.trunk."
TRACKER_PARTS = "backbone.vision_backbone."  # what the tracker stage trained (trunk + both necks)
STATE = "state.pt"


@dataclass
class DetectorSettings:
    """pretrain/params.yaml ``detector``."""

    dense_steps: int = 600
    dense_lr: float = 1.0e-3
    steps: int = 5000
    lr: float = 3.0e-4
    batch: int = 2
    aux_semantic: float = 20.0
    lr_warmup: int = 50
    weight_decay: float = 0.05
    eval_every: int = 500
    eval_images: int = 60
    save_every: int = 100
    log_every: int = 50
    seed: int = 0
    cpu_threads: int = 1

    def check(self, params_file) -> None:
        if min(self.dense_steps, self.steps, self.batch, self.save_every, self.log_every, self.eval_every) < 1:
            raise ValueError("'detector' steps, batch, save_every, log_every and eval_every must be >= 1")
        if self.lr <= 0 or self.dense_lr <= 0:
            raise ValueError("'detector.lr' and 'detector.dense_lr' must be > 0")

    def key(self) -> str:
        """The run directory: what changes what is learned (these settings and the tiny model's definition), not how
        often it is logged, saved or measured."""
        from factory_sam3.models.tiny import TINY_CONFIG

        payload = {
            k: v
            for k, v in asdict(self).items()
            if k not in ("eval_every", "eval_images", "save_every", "log_every", "cpu_threads")
        }
        payload["tiny"] = asdict(TINY_CONFIG)
        return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def total_steps(self) -> int:
        return self.dense_steps + self.steps


def find_output(outputs, key: str):
    """The first ``key`` in sam3's nested outputs (the last decoder stage's dict)."""
    if isinstance(outputs, dict):
        return outputs.get(key)
    if isinstance(outputs, (list, tuple)) or hasattr(outputs, "__iter__"):
        for item in outputs:
            found = find_output(item, key)
            if found is not None:
                return found
    return None


def semantic_loss(outputs, batch):
    """BCE (positives x5) + dice on the semantic head's map; also IoU where the concept is present and the share of
    pixels predicted where it is absent (is the map conditioned on the prompt?)."""
    import torch
    import torch.nn.functional as F

    logits = find_output(outputs, "semantic_seg")
    target = batch.find_targets[0].semantic_segments.float()[:, None]
    target = (F.interpolate(target, size=logits.shape[-2:], mode="area") > 0.5).float()
    bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(5.0))
    prob = logits.sigmoid()
    dice = 1 - (2 * (prob * target).sum((1, 2, 3)) + 1) / (prob.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
    with torch.no_grad():
        pred = (logits > 0).float()
        present = target.sum((1, 2, 3)) > 0
        inter, union = (pred * target).sum((1, 2, 3)), ((pred + target) > 0).float().sum((1, 2, 3))
        stats = {
            "semantic_iou_present": float((inter[present] / union[present].clamp(min=1)).mean())
            if present.any()
            else None,
            "semantic_area_absent": float(pred[~present].mean()) if (~present).any() else None,
        }
    return bce + dice.mean(), stats


def lr_scale(step: int, length: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``length``."""
    return min(1.0, step / max(warmup, 1)) * 0.5 * (1 + math.cos(math.pi * min(step, length) / length))


def ensure_process_group() -> bool:
    """sam3's loss all-reduces its box count: one CPU process needs a gloo group of one. True if we made it."""
    import torch.distributed as dist

    from factory_sam3.training.common import free_port

    if dist.is_initialized():
        return False
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    return True


def build_model(tracker_file: Path, seed: int):
    """The tiny image model, fresh detector heads and text encoder, the tracker stage's trunk and necks."""
    import torch

    from factory_sam3.errors import UserError
    from factory_sam3.models.build import build_image_model

    torch.manual_seed(seed)
    model = build_image_model("tiny", train=True, random_init=True)
    state = load_torch_file(tracker_file, "cannot read the tracker stage's weights")
    prefix = "detector." + TRACKER_PARTS
    own = {k for k in model.state_dict() if k.startswith(TRACKER_PARTS)}
    # the video model's image backbone also holds the tracker's own neck (sam2_convs), which the image model lacks
    parts = {
        k[len("detector.") :]: v for k, v in state.items() if k.startswith(prefix) and k[len("detector.") :] in own
    }
    if not parts or set(parts) != own:
        raise UserError(
            f"the tracker stage's weights do not hold the tiny trunk and necks ({len(parts)} of "
            f"{len(own)} '{TRACKER_PARTS}*' keys): remake it with `dvc repro pretrain/dvc.yaml:tracker`",
            tracker_file,
        )
    model.load_state_dict(parts, strict=False)
    for name, param in model.named_parameters():
        param.requires_grad_(not name.startswith(TRUNK))
    return model


def train(
    settings: DetectorSettings,
    data_root: Path,
    tracker_file: Path,
    run_dir: Path,
    log_metrics=lambda metrics, step: None,
):
    """Train (or resume) the detector heads; returns ``(model, history, evals)``."""
    import torch

    if settings.cpu_threads:
        torch.set_num_threads(settings.cpu_threads)
    made_group = ensure_process_group()
    try:
        return _train(settings, data_root, tracker_file, run_dir, log_metrics)
    finally:  # an error must not leave a process group behind (the next training in this process would fail)
        if made_group:
            import torch.distributed as dist

            dist.destroy_process_group()


# The part of Stage 1's composed config pretraining uses (dataset, collate, loss), as the guide sets it: fixed here,
# so editing train_stage1 in params.yaml never changes how the shipped weights were made.
STAGE1_GUIDE = {
    "epochs": 1,
    "batch_size": 1,
    "gradient_accumulation": 1,
    "resolution": None,
    "min_resize": 480,
    "include_negatives": True,
    "mask_loss": True,
    "max_ann_per_img": 200,
    "cpu_threads": 1,
    "num_gpus": 1,
    "use_cluster": False,
}


def stage1_settings(data_root: str | Path):
    """Stage 1's settings for the tiny model on ``data_root``: the config pretraining instantiates its parts from."""
    from factory_sam3.training.stage1.config import settings_with

    return settings_with(model={"profile": "tiny", "device": "cpu"}, train=STAGE1_GUIDE, data_root=str(data_root))


def _train(settings, data_root, tracker_file, run_dir, log_metrics):
    import random

    import torch
    from hydra.utils import instantiate

    from factory_sam3.errors import UserError
    from factory_sam3.pretrain.gate import detection_report
    from factory_sam3.training.stage1.train import prepare

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg, _, _ = prepare(stage1_settings(data_root), runs_dir=run_dir / "config")
    dataset = instantiate(cfg.trainer.data.train.dataset)
    collate = instantiate(cfg.trainer.data.train.collate_fn)
    loss_fn = instantiate(cfg.trainer.loss.all)
    model = build_model(tracker_file, settings.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    rng = np.random.default_rng(settings.seed)
    step, order, history, evals = 0, [], [], []
    optimizer = torch.optim.AdamW(params, lr=settings.dense_lr, weight_decay=settings.weight_decay)
    state_file = run_dir / STATE
    if state_file.is_file():
        state = load_torch_file(state_file, "cannot resume from it", "; delete it to start over")
        try:
            model.load_state_dict(state["model"], strict=True)
        except (KeyError, RuntimeError) as err:  # another model's state under this key: say so, never a traceback
            first = str(err).splitlines()[0]
            raise UserError(
                f"cannot resume from it (it holds another model: {first}); delete it to start over", state_file
            ) from None
        step, order, history, evals = state["step"], state["order"], state["history"], state["evals"]
        rng.bit_generator.state = state["rng"]
        if step > settings.dense_steps:
            optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["random"])
        print(f"pretrain detector: resumed at step {step}/{settings.total_steps} from {state_file}", flush=True)
    else:
        torch.manual_seed(settings.seed)
        random.seed(settings.seed)
    model.train()
    start, first_step = time.monotonic(), step
    while step < settings.total_steps:
        step += 1
        dense = step <= settings.dense_steps
        if step == settings.dense_steps + 1:  # the full phase starts with fresh moments at its own LR
            optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
        phase_step = step if dense else step - settings.dense_steps
        base = settings.dense_lr if dense else settings.lr
        for group in optimizer.param_groups:
            group["lr"] = base * lr_scale(
                phase_step, settings.dense_steps if dense else settings.steps, settings.lr_warmup
            )
        items = []
        for _ in range(settings.batch):
            if not order:
                order = [int(i) for i in rng.permutation(len(dataset))]
            items.append(dataset[order.pop()])
        _, batch = collate(items).popitem()
        outputs = model(batch)
        dense_loss, stats = semantic_loss(outputs, batch)
        if dense:
            loss = dense_loss
        else:
            terms = loss_fn(outputs, [model.back_convert(t) for t in batch.find_targets])
            loss = terms["core_loss"] + settings.aux_semantic * dense_loss
            stats.update(
                {
                    k: float(terms[k].detach())
                    for k in ("loss_giou", "loss_giou_fs", "loss_bbox", "loss_mask", "loss_dice", "presence_dec_acc")
                    if k in terms
                }
            )
        if not torch.isfinite(loss):
            raise RuntimeError(f"pretrain detector: the loss is {float(loss)} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append({"step": step, "phase": "dense" if dense else "full", "loss": float(loss.detach()), **stats})
        if step % settings.log_every == 0:
            window = history[-settings.log_every :]
            means = {
                k: float(np.mean([r[k] for r in window if r.get(k) is not None]))
                for k in window[-1]
                if k not in ("step", "phase") and any(r.get(k) is not None for r in window)
            }
            log_metrics({f"train/{k}": v for k, v in means.items()}, step)
            rate = (time.monotonic() - start) / max(1, step - first_step)
            eta = rate * (settings.total_steps - step) / 60
            print(
                f"pretrain detector: step {step}/{settings.total_steps} ({history[-1]['phase']}, ~{eta:.0f} min left) "
                + " ".join(f"{k} {v:.3f}" for k, v in means.items()),
                flush=True,
            )
        if not dense and (phase_step % settings.eval_every == 0 or step == settings.total_steps):
            model.eval()
            with torch.no_grad():
                report = detection_report(model, Path(data_root) / "valid", settings.eval_images)
            model.train()
            evals.append({"step": step, **{k: report.get(k) for k in ("segm_AP", "segm_AP50", "bbox_AP")}})
            log_metrics({f"valid/{k}": v for k, v in evals[-1].items() if k != "step" and v is not None}, step)
            print(f"pretrain detector: step {step} valid segm AP {report.get('segm_AP')}", flush=True)
        if step % settings.save_every == 0 or step == settings.total_steps:
            with atomic_file(state_file, "wb") as handle:
                torch.save(
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "step": step,
                        "order": order,
                        "history": history,
                        "evals": evals,
                        "rng": rng.bit_generator.state,
                        "torch_rng": torch.get_rng_state(),
                        "random": random.getstate(),
                    },
                    handle,
                )
    model.eval()
    return model, history, evals


def export_detector(model, out_dir: Path, settings: DetectorSettings) -> None:
    """``out_dir/model.pt`` (keys 'detector.*', as Stage 1 exports) + ``stage1.json``."""
    import torch

    from factory_sam3.models.export import PREFIX
    from factory_sam3.models.tiny import TINY_CONFIG

    with atomic_dir(out_dir) as tmp:
        torch.save({PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp / "model.pt")
        write_json(
            tmp / "stage1.json",
            {
                "profile": "tiny",
                "resolution": TINY_CONFIG.resolution,
                "categories": categories(),
                "steps": settings.total_steps,
                "format": "sam3 image model state dict, keys prefixed 'detector.'",
            },
        )
