"""Stage 2 training loop: optimiser, resumable checkpoints, DDP, held-out evaluation, outputs.

``run(settings, model_params)`` trains the tracker on YTVIS clips and returns the metrics; the DVC stage
(``training.stage2.stage``) loads the settings, calls it and logs the run to MLflow.

- Steps are optimiser steps; each accumulates ``grad_accum`` clips (per process). Clip ``k`` of step ``s`` on
  rank ``r`` is drawn from ``numpy.random.default_rng([seed, s, k, r])`` and torch is reseeded the same way, so a
  resumed run replays exactly the clips and dropout masks it would have seen.
- Checkpoints go to ``runs/train_stage2/<key>/last.pt`` every ``save_freq`` steps and at the end (atomic
  rename). ``<key>`` hashes the settings, the model section, the Stage 1 weights and the annotations, so a
  changed config starts fresh instead of resuming a stale run. DVC deletes ``models/stage2`` before a rerun;
  the scratch directory survives, so ``dvc repro`` after a kill resumes.
- The final export (``models/stage2/model.pt``) is the full video-model state dict, ``detector.*`` +
  ``tracker.*`` (``factory_sam3.models.video.save_stage2``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from factory_sam3 import layout
from factory_sam3.device import training_device
from factory_sam3.errors import UserError
from factory_sam3.evaluation.metrics import region_similarity
from factory_sam3.io import atomic_dir, atomic_file, file_md5, write_json
from factory_sam3.models import video as video_models
from factory_sam3.training.common import (
    SlurmTask,
    free_port,
    load_checkpoint,
    progress_line,
    rank_from_environment,
    require_visible_gpus,
    run_on_slurm,
    save_checkpoint,
    seed_torch,
)
from factory_sam3.training.stage2 import losses
from factory_sam3.training.stage2.config import Stage2Settings
from factory_sam3.training.stage2.data import ClipAugment, ClipSampler, Video, collate_clip, load_ytvis
from factory_sam3.training.stage2.model import ClipForward, ForwardOptions

STAGE = "train_stage2"
RUNS_DIR = layout.runs_dir(STAGE)
METRICS_FILE = layout.metrics_file(STAGE)
PLOT_FILE = layout.loss_plot(STAGE)
CHECKPOINT = "last.pt"
LOSS_COLUMNS = ["loss", *losses.COMPONENTS]


# ------------------------------------------------------------------------------------------------ helpers


def apply_freeze(model: nn.Module, freeze: list, train: list) -> dict:
    """Longest matching prefix wins: a parameter is trained unless its longest match is in ``freeze``
    (parameters matching neither list train). Unknown prefixes are an error."""
    names = [n for n, _ in model.named_parameters()]
    for key, prefixes in (("freeze", freeze), ("train", train)):
        for prefix in prefixes:
            prefix = prefix.rstrip(".")
            if not any(n == prefix or n.startswith(prefix + ".") for n in names):
                raise UserError(
                    f"no parameters under '{prefix}' (e.g. tracker, detector.backbone.vision_backbone.trunk)",
                    "params.yaml",
                    f"train_stage2.{key}",
                )

    def longest(name, prefixes):
        hits = [len(p) for p in prefixes if name == p.rstrip(".") or name.startswith(p.rstrip(".") + ".")]
        return max(hits, default=-1)

    counts = {"trainable": 0, "frozen": 0}
    for name, param in model.named_parameters():
        trainable = longest(name, train) >= longest(name, freeze)
        param.requires_grad_(trainable)
        counts["trainable" if trainable else "frozen"] += param.numel()
    return counts


def set_train_modes(model: video_models.Sam3VideoModel) -> None:
    """Train mode for what trains; frozen detector parts in eval (no drop-path on a frozen trunk)."""
    model.train()
    for module in model.detector.modules():
        params = list(module.parameters(recurse=True))
        if params and not any(p.requires_grad for p in params):
            module.eval()


def trunk_trains(model) -> bool:
    return any(p.requires_grad for p in model.neck.trunk.parameters())


# settings that change how often it logs or saves, or where it runs, but not what it learns: not in the run key
NOT_WHAT_IT_LEARNS = (
    "save_freq",
    "log_freq",
    "cpu_threads",
    "use_cluster",
    "partition",
    "account",
    "qos",
    "timeout_hour",
    "cpus_per_task",
    "mem_gb",
)


def run_key(settings: Stage2Settings, model_params: dict, inputs: list[Path], model_config: dict | None = None) -> str:
    payload = {
        "settings": {k: v for k, v in asdict(settings).items() if k not in NOT_WHAT_IT_LEARNS},
        "model": model_params,
        "architecture": model_config or {},
        "inputs": {str(p): file_md5(p) for p in inputs if p.is_file()},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(model: nn.Module, settings: Stage2Settings, profile: str):
    base = float(settings.base_lr.get(profile, 0.0))
    if base <= 0:
        raise UserError(f"'train_stage2.base_lr.{profile}' is missing or not positive", "params.yaml")
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    if not decay and not no_decay:
        raise UserError("nothing to train: every parameter is frozen", "params.yaml", "train_stage2.freeze")
    lr = base * float(settings.lr_scale)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, settings.steps, settings.warmup_steps)
    )
    return optimizer, scheduler, lr


def load_split(data_dir: Path, split: str) -> list[Video]:
    split_dir = data_dir / split
    if not (split_dir / layout.YTVIS_ANNOTATIONS).is_file():
        return []
    return load_ytvis(split_dir)


# ------------------------------------------------------------------------------------------ held-out IoU


def cross_object_iou(predicted: dict, frames: list[int]) -> float:
    """Mean IoU between the predicted masks of *different* objects on the same frame (pairs where either is
    non-empty). A tracker that follows its prompt gives distinct objects distinct masks (near 0 when they do
    not overlap); one that ignores the prompt and segments the same region for every object scores near 1."""
    scores = []
    ids = list(predicted)
    for f in frames:
        for a in range(len(ids)):
            for b in range(a + 1, len(ids)):
                ma, mb = predicted[ids[a]][f], predicted[ids[b]][f]
                if ma.any() or mb.any():
                    scores.append(region_similarity(ma, mb))
    return float(np.mean(scores)) if scores else float("nan")


def heldout_iou(model, videos: list[Video], max_frames: int) -> dict:
    """Semi-supervised VOS on held-out videos (the first ``max_frames`` frames of each): every object is
    prompted with its first annotated mask and tracked. ``iou``: mean IoU over the annotated frames after the
    prompt where the object is present, against ``copy_iou`` (the prompted mask copied forward) on the same
    frames; ``iou_all``/``copy_iou_all`` also count frames where it is absent (empty vs empty = 1), which
    rewards predicting nothing, so they are secondary. ``cross_object_iou`` (see ``cross_object_iou``; the
    ground truth's own value beside it as ``gt_cross_object_iou``) shows whether the predictions depend on
    the prompt at all."""
    ours, copy, ours_all, copy_all, cross, gt_cross = [], [], [], [], [], []
    for video in videos:
        frames = list(range(min(len(video.file_names), max_frames)))
        prompts = {}
        for i, track in enumerate(video.tracks):
            first = next((f for f in frames if track.segmentations[f] is not None), None)
            if first is not None and first < frames[-1]:
                prompts[i] = (first, video.mask(i, first))
        if not prompts:
            continue
        images = [video.image(f) for f in frames]
        predicted = video_models.track(model, images, prompts)
        annotated = set(video.annotated)
        truth = {
            i: {f: video.mask(i, f) for f in frames[first + 1 :] if f in annotated} for i, (first, _) in prompts.items()
        }  # decoded once, for both measures
        after_all_prompts = [f for f in frames if f in annotated and f > max(first for first, _ in prompts.values())]
        if len(prompts) > 1 and after_all_prompts:
            cross.append(cross_object_iou(predicted, after_all_prompts))
            gt_cross.append(cross_object_iou(truth, after_all_prompts))
        for i, (_, mask) in prompts.items():
            for f, gt in truth[i].items():
                a, b = region_similarity(predicted[i][f], gt), region_similarity(mask, gt)
                ours_all.append(a)
                copy_all.append(b)
                if gt.any():
                    ours.append(a)
                    copy.append(b)

    def mean(values):
        values = [v for v in values if not np.isnan(v)]
        return float(np.mean(values)) if values else float("nan")

    return {
        "iou": mean(ours),
        "copy_iou": mean(copy),
        "frames": len(ours),
        "iou_all": mean(ours_all),
        "copy_iou_all": mean(copy_all),
        "frames_all": len(ours_all),
        "cross_object_iou": _none_if_nan(mean(cross)),
        "gt_cross_object_iou": _none_if_nan(mean(gt_cross)),
    }


def _none_if_nan(value: float):
    return None if np.isnan(value) else value


# ------------------------------------------------------------------------------------------------ training


@dataclass
class Context:
    settings: Stage2Settings
    model_params: dict
    data_dir: Path
    stage1_dir: Path
    out_dir: Path
    run_dir: Path
    device: str
    rank: int = 0
    world_size: int = 1
    on_log: Callable[[dict], None] | None = None  # rank 0, single process: live metrics (MLflow)


def _mean_dict(rows: list[dict]) -> dict:
    return {
        k: (float(np.nanmean(vals)) if not np.all(np.isnan(vals)) else float("nan"))
        for k in rows[0]
        for vals in [np.array([r[k] for r in rows], dtype=float)]
    }


COLLAPSE_IOU = 0.9  # training clips' cross-object IoU above this at the end: the tracker ignores its prompt


def collapse_warning(history: list[dict], window: int = 20) -> str | None:
    values = [r["cross_object_iou"] for r in history[-window:] if not np.isnan(r.get("cross_object_iou", np.nan))]
    if values and float(np.mean(values)) > COLLAPSE_IOU:
        return (
            f"warning: {STAGE}: cross-object IoU on the last training clips is {np.mean(values):.2f} (> "
            f"{COLLAPSE_IOU}): the tracker predicts the same mask whatever its prompt; lower "
            "train_stage2.lr_scale or check the starting weights"
        )
    return None


def save_training_state(path: Path, model, optimizer, scheduler, step: int, history: list, key: str) -> None:
    """What resumes a run: the trained weights (trainable + tracker), optimiser, schedule, history."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items() if k in saved_keys(model)}
    save_checkpoint(
        {
            "key": key,
            "step": step,
            "model": state,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "history": history,
        },
        path,
    )


def saved_keys(model) -> set[str]:
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k for k in model.state_dict() if k in trainable or k.startswith("tracker.")}


def load_training_state(path: Path, key: str) -> dict | None:
    """The run's checkpoint, or None when there is none (a fresh start). An unreadable file is an error
    (``training.common.load_checkpoint``); one of another configuration cannot be here (``key`` names the folder)
    but is refused all the same."""
    if not path.is_file():
        return None
    payload = load_checkpoint(path)
    if not isinstance(payload, dict) or payload.get("key") != key:
        raise UserError(
            f"checkpoint of another run (key {payload.get('key') if isinstance(payload, dict) else '?'}, "
            f"expected {key}); delete it to start this run over",
            path,
        )
    return payload


def restore_weights(model, state: dict, path: Path) -> None:
    """Load a checkpoint's weights: exactly the keys ``save_training_state`` wrote, nothing unexpected."""
    expected = saved_keys(model)
    result = model.load_state_dict(state, strict=False)
    missing = sorted(expected & set(result.missing_keys))
    if result.unexpected_keys or missing:
        problem = (
            f"unexpected weights {result.unexpected_keys[:3]}"
            if result.unexpected_keys
            else f"missing weights {missing[:3]}"
        )
        raise UserError(f"checkpoint does not fit the model ({problem}); delete it to start this run over", path)


def prepare_model(ctx: Context) -> tuple[video_models.Sam3VideoModel, dict]:
    settings, params = ctx.settings, ctx.model_params
    profile = params.get("profile", "tiny")
    stage1_info = {}
    info_file = ctx.stage1_dir / "stage1.json"
    if info_file.is_file():
        stage1_info = json.loads(info_file.read_text())
        if stage1_info.get("profile", profile) != profile:
            raise UserError(
                f"Stage 1 was trained with profile '{stage1_info.get('profile')}', model.profile is "
                f"'{profile}': rerun train_stage1",
                info_file,
            )
    resolution = stage1_info.get("resolution") if profile == "tiny" else None
    if settings.resolution is not None and resolution is not None and settings.resolution != resolution:
        raise UserError(
            f"'train_stage2.resolution' is {settings.resolution} but Stage 1 trained at {resolution} px "
            "(the image trunk comes from Stage 1): set it to null or retrain Stage 1",
            "params.yaml",
        )
    resolution = resolution or settings.resolution
    model = video_models.build_video_model(profile, seed=settings.seed, resolution=resolution)
    base = video_models.starting_checkpoint(model, params)
    report = video_models.init_from_checkpoints(model, ctx.stage1_dir, base)
    counts = apply_freeze(model, settings.freeze, settings.train)
    report.update(counts)
    return model.to(ctx.device), report


def train_worker(rank: int, ctx: Context, port: int = 0, local_rank: int | None = None) -> dict | None:
    """One training process: rank ``rank`` of ``ctx.world_size``, GPU ``local_rank`` of its node (default: the
    rank, one node). ``port`` is the rendezvous on this host; 0 keeps the MASTER_ADDR/PORT already set (SLURM)."""
    ctx.rank = rank
    local_rank = rank if local_rank is None else local_rank
    device = ctx.device
    if ctx.world_size > 1:
        backend = "nccl" if device == "cuda" else "gloo"
        if port:
            os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
        dist.init_process_group(backend, rank=rank, world_size=ctx.world_size)
    if device == "cpu":
        # few threads: on a shared CPU, oversubscribed OpenMP threads made each step ~5x slower (measured)
        torch.set_num_threads(ctx.settings.cpu_threads)
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
        ctx.device = device
    try:
        return _train(ctx)
    finally:
        if ctx.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(ctx: Context) -> dict | None:
    settings, rank, device = ctx.settings, ctx.rank, ctx.device
    is_main = rank == 0
    started = time.monotonic()
    train_videos = load_split(ctx.data_dir, "train")
    if not train_videos:
        raise UserError("no training videos (expected train/annotations.json)", ctx.data_dir)
    heldout, heldout_split = load_split(ctx.data_dir, "valid"), "valid"
    if not heldout:  # say so: the held-out numbers then come from the test split evaluate also scores
        heldout, heldout_split = load_split(ctx.data_dir, "test"), "test"
        if is_main:
            print(
                f"{STAGE}: warning: no validation videos in {ctx.data_dir / 'valid'}; the held-out IoU is "
                f"measured on the test split{'' if heldout else ' (empty too: no held-out IoU)'}",
                file=sys.stderr,
                flush=True,
            )
    sampler = ClipSampler(
        train_videos,
        frames_per_clip=settings.frames_per_clip,
        stride_min=settings.stride_min,
        stride_max=settings.stride_max,
        reverse_prob=settings.reverse_prob,
        max_objects=settings.max_objects,
        stride_prob=settings.stride_prob,
        exit_prob=settings.exit_prob,
    )
    augment = ClipAugment(enabled=settings.augment)

    model, report = prepare_model(ctx)
    profile = model.profile
    inputs = [ctx.data_dir / "train" / layout.YTVIS_ANNOTATIONS, video_models.stage1_weights_file(ctx.stage1_dir)]
    key = run_key(settings, ctx.model_params, inputs, model.config)
    ckpt_path = ctx.run_dir / key / CHECKPOINT
    optimizer, scheduler, lr = build_optimizer(model, settings, profile)
    options = ForwardOptions(
        prompt_probs=dict(settings.prompt_probs),
        num_cond_frames=settings.num_cond_frames,
        correction_clicks=settings.correction_clicks,
        checkpoint_memory_attention=settings.act_ckpt,
        train_trunk=trunk_trains(model),
    )
    module = ClipForward(model, options)
    if ctx.world_size > 1:
        ddp_kwargs = {"device_ids": [torch.device(device).index]} if device.startswith("cuda") else {}
        module = nn.parallel.DistributedDataParallel(module, find_unused_parameters=True, **ddp_kwargs)

    before = None
    if is_main and heldout:
        before = heldout_iou(model, heldout, settings.eval_frames)

    history: list[dict] = []
    start_step = 0
    resumed = load_training_state(ckpt_path, key)
    if resumed is not None:
        restore_weights(model, resumed["model"], ckpt_path)
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        history = list(resumed["history"])
        start_step = int(resumed["step"])
        if is_main:
            print(f"{STAGE}: resuming from {ckpt_path} at step {start_step}", file=sys.stderr, flush=True)
    trainable = [p for p in model.parameters() if p.requires_grad]
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else None
    set_train_modes(model)
    loop_start = time.monotonic()
    for step in range(start_step, settings.steps):
        optimizer.zero_grad(set_to_none=True)
        rows = []
        for micro in range(settings.grad_accum):
            rng = np.random.default_rng([settings.seed, step, micro, rank])
            seed_torch(settings.seed, step, micro, rank)
            batch = collate_clip(sampler.sample(rng), model.image_size, augment, rng).to(device)
            sync = micro == settings.grad_accum - 1 or ctx.world_size == 1
            context = module.no_sync() if (ctx.world_size > 1 and not sync) else _null()
            with context:
                with amp if amp is not None else _null():
                    out = module(batch, rng)
                (out["loss"] / settings.grad_accum).backward()
            rows.append(
                {**{k: float(out[k].detach()) for k in LOSS_COLUMNS}, "cross_object_iou": out["cross_object_iou"]}
            )
        if settings.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trainable, settings.grad_clip)
        optimizer.step()
        scheduler.step()
        row = {"step": step + 1, **_mean_dict(rows), "lr": scheduler.get_last_lr()[0]}
        history.append(row)
        done = step + 1
        if is_main and (done % settings.log_freq == 0 or done == settings.steps):
            if ctx.on_log is not None:
                window = history[-settings.log_freq :]
                ctx.on_log({"step": done, **_mean_dict([{k: v for k, v in r.items() if k != "step"} for r in window])})
            elapsed = time.monotonic() - loop_start
            rate = elapsed / max(1, done - start_step)
            print(
                progress_line(STAGE, done, settings.steps, rate, f"loss {row['loss']:.4f}"), file=sys.stderr, flush=True
            )
        if is_main and (done % settings.save_freq == 0 or done == settings.steps):
            save_training_state(ckpt_path, model, optimizer, scheduler, done, history, key)
    if not is_main:
        return None
    warning = collapse_warning(history)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    train_seconds = time.monotonic() - loop_start
    after = heldout_iou(model, heldout, settings.eval_frames) if heldout else None
    seconds = time.monotonic() - started
    losses_seq = [r["loss"] for r in history]
    k = min(10, len(losses_seq))
    metrics = {
        "profile": profile,
        "device": str(device),
        "steps": settings.steps,
        "clips": settings.steps * settings.grad_accum * ctx.world_size,
        "resumed_from_step": start_step,
        "seconds": round(seconds, 2),
        "s_per_step": round(train_seconds / max(1, settings.steps - start_step), 4),
        "lr": lr,
        "loss_first10": float(np.mean(losses_seq[:k])) if k else None,
        "loss_last10": float(np.mean(losses_seq[-k:])) if k else None,
        "final": {c: float(np.mean([r[c] for r in history[-k:]])) for c in LOSS_COLUMNS} if k else {},
        "train_cross_object_iou_last20": _none_if_nan(
            _mean_dict([{"v": r.get("cross_object_iou", float("nan"))} for r in history[-20:]])["v"]
        )
        if history
        else None,
        "collapse_warning": warning,
        "heldout": None
        if after is None
        else {
            **after,
            "iou_before_training": None if before is None else before["iou"],
            "split": heldout_split,
        },
        "trainable_params": report["trainable"],
        "frozen_params": report["frozen"],
        "init": {k: v for k, v in report.items() if k not in ("trainable", "frozen")},
    }
    return {"metrics": metrics, "history": history, "model": model, "run_key": key}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _spawn_entry(rank: int, ctx: Context, port: int) -> None:
    result = train_worker(rank, ctx, port)
    if rank == 0 and result is not None:
        write_outputs(result, ctx)


def _slurm_entry(ctx: Context) -> None:
    """One task of a SLURM job (``common.SlurmTask`` set the rendezvous and ranks in the environment)."""
    rank, local_rank = rank_from_environment()
    result = train_worker(rank, ctx, local_rank=local_rank)
    if rank == 0 and result is not None:
        write_outputs(result, ctx)


def logs_live(settings: Stage2Settings) -> bool:
    """One process in this one: per-step metrics reach MLflow as they happen; otherwise from the plot file."""
    return settings.world_size == 1 and not settings.use_cluster


def run(
    settings: Stage2Settings,
    model_params: dict,
    data_dir: Path = layout.YTVIS,
    stage1_dir: Path = layout.STAGE1_MODEL,
    out_dir: Path = layout.STAGE2_MODEL,
    runs_dir: Path = RUNS_DIR,
    metrics_file: Path = METRICS_FILE,
    plot_file: Path = PLOT_FILE,
    on_log: Callable[[dict], None] | None = None,
) -> dict:
    """Train, export ``out_dir``, write the metrics and plot files; returns the metrics."""
    device = training_device(model_params.get("device", "auto"), settings.use_cluster)
    require_visible_gpus(settings, device, STAGE)
    video_models.stage1_weights_file(stage1_dir)  # a clear error before anything starts
    ctx = Context(
        settings,
        dict(model_params),
        Path(data_dir),
        Path(stage1_dir),
        Path(out_dir),
        Path(runs_dir),
        device,
        world_size=settings.world_size,
    )
    ctx.metrics_file, ctx.plot_file = Path(metrics_file), Path(plot_file)
    ctx.on_log = on_log if logs_live(settings) else None
    if settings.use_cluster:
        task = SlurmTask(_slurm_entry, ctx)
        run_on_slurm(task, STAGE, ctx.run_dir, settings)
        return json.loads(Path(metrics_file).read_text())
    if settings.num_gpus > 1:
        import torch.multiprocessing as mp

        mp.spawn(_spawn_entry, args=(ctx, free_port()), nprocs=settings.num_gpus, join=True)
        return json.loads(Path(metrics_file).read_text())
    result = train_worker(0, ctx)
    write_outputs(result, ctx)
    return result["metrics"]


def write_outputs(result: dict, ctx: Context) -> None:
    model, metrics, history = result["model"], result["metrics"], result["history"]
    with atomic_dir(ctx.out_dir) as tmp:
        video_models.save_stage2(
            model, tmp, extra={"stage2": {"steps": metrics["steps"], "run_key": result["run_key"]}}
        )
    write_json(ctx.metrics_file, metrics)
    columns = ["step", *LOSS_COLUMNS, "cross_object_iou", "lr"]
    with atomic_file(ctx.plot_file) as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})
