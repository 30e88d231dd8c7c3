"""Stage 1 launcher: run sam3's own Trainer on the composed config, resumably, then export the model.

    from factory_sam3.training.stage1.train import train
    result = train(settings)                   # Stage1Settings.from_params(config.load())

Layout:
  runs/train_stage1/<config hash>/   scratch that survives `dvc repro` deleting the outs:
      checkpoints/checkpoint.pt      the Trainer's resumable checkpoint (every epoch, atomic tmp+rename)
      checkpoints/checkpoint_<N>.pt  kept every save_freq epochs
      steps.csv, logs/, dumps/       per-step losses, Trainer logs and stats, val predictions
  models/stage1/                     the export (DVC out): model.pt ('detector.'-prefixed state dict,
                                     the layout sam3.model_builder loads), config.yaml (resolved),
                                     stage1.json (profile, resolution, categories, epochs, steps)

Processes: one process on CPU (gloo) or one GPU (nccl); ``num_gpus`` > 1 spawns one process per GPU
(DDP; on CPU it spawns gloo processes, used by the tests); ``use_cluster`` submits to SLURM through
submitit with sam3's launcher options (partition, account, qos, nodes, ...).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factory_sam3 import layout
from factory_sam3.device import training_device
from factory_sam3.training.common import (
    SlurmTask,
    free_port,
    require_visible_gpus,
    run_on_slurm,
    save_checkpoint,
)
from factory_sam3.training.stage1.config import RUNS_DIR, Stage1Settings, compose, config_hash, register_resolvers

EXPORT_MODEL = "model.pt"
EXPORT_CONFIG = "config.yaml"
EXPORT_INFO = "stage1.json"
VAL_AP_KEY = "coco_eval_segm_AP"


@dataclass
class Stage1Result:
    run_dir: Path
    config: Any  # resolved DictConfig
    checkpoint: Path  # the Trainer's final checkpoint.pt
    epochs: int
    steps: int
    seconds: float
    val: dict[str, float]  # last validation's metrics (short names)
    val_history: list[dict]  # one dict per validation: {"epoch": e, metric: value}
    step_rows: list[dict]  # steps.csv rows


def _trainer_class():
    from sam3.train.trainer import Trainer

    class AtomicCheckpointTrainer(Trainer):
        """sam3's Trainer with a truly atomic checkpoint write: upstream removes the old checkpoint before
        renaming the new one into place, so a kill in between leaves no checkpoint.pt to resume from."""

        def _save_checkpoint(self, checkpoint, checkpoint_path):
            save_checkpoint(checkpoint, checkpoint_path)

    return AtomicCheckpointTrainer


def make_trainer(**kwargs):  # the Hydra target; the class is built lazily (importing sam3 is slow)
    return _trainer_class()(**kwargs)


def _run_trainer(rank: int, world_size: int, port: int, cfg_container: dict) -> None:
    """One training process (rank ``rank`` of ``world_size`` on this node)."""
    os.environ.update(
        MASTER_ADDR="localhost", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size)
    )
    _start_trainer(cfg_container)


def _start_trainer(cfg_container: dict) -> None:
    """Build sam3's Trainer from the resolved config and run it; the DDP variables are already set."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from factory_sam3.models import sam3_compat

    sam3_compat.apply()
    register_resolvers()
    cfg = OmegaConf.create(cfg_container)
    if cfg.run.get("cpu_threads"):
        import torch

        # intra-op threads beyond the free cores make every op spin-wait (measured 5x slower at 2 threads
        # on a busy 2-core machine); DDP processes on CPU each get their own
        torch.set_num_threads(int(cfg.run.cpu_threads))
    trainer = instantiate(cfg.trainer, _recursive_=False)
    try:
        trainer.run()
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def run_dir_for(cfg, settings: Stage1Settings, runs_dir: Path = RUNS_DIR) -> Path:
    return Path(runs_dir) / config_hash(cfg, settings.data_root, (settings.train_split, settings.val_split))


def prepare(settings: Stage1Settings, runs_dir: Path = RUNS_DIR, world_size: int | None = None):
    """Compose + check everything that can fail before training (checkpoint, data, sizes)."""
    device = training_device(settings.model.device, settings.train.use_cluster)
    if world_size is None:
        world_size = settings.train.world_size
    require_visible_gpus(settings.train, device, "train_stage1")
    checkpoint = None
    if settings.model.profile == "sam3":
        from factory_sam3.models.build import load_state_dict_file, resolve_checkpoint

        path = resolve_checkpoint(settings.model.checkpoint)
        load_state_dict_file(path)  # unreadable files fail now, not after minutes of setup
        checkpoint = str(path.resolve())
    elif settings.tiny_init:
        checkpoint = str(Path(settings.tiny_init).resolve())
    cfg = compose(settings, device, world_size, checkpoint=checkpoint)
    run_dir = run_dir_for(cfg, settings, runs_dir)
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.run.run_dir = str(run_dir)
    return cfg, run_dir, world_size


def train(settings: Stage1Settings, runs_dir: Path = RUNS_DIR, world_size: int | None = None) -> Stage1Result:
    """Train (or resume, or just re-validate a finished run) and return what it measured."""
    import torch.multiprocessing as mp
    from omegaconf import OmegaConf

    cfg, run_dir, world_size = prepare(settings, runs_dir, world_size)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / EXPORT_CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    container = OmegaConf.to_container(cfg, resolve=True)
    start = time.monotonic()
    if settings.train.use_cluster:
        task = SlurmTask(_start_trainer, container)
        run_on_slurm(task, "train_stage1", run_dir, settings.train)
    elif world_size == 1:
        _run_trainer(0, 1, free_port(), container)
    else:
        mp.start_processes(
            _run_trainer, args=(world_size, free_port(), container), nprocs=world_size, start_method="spawn"
        )
    seconds = time.monotonic() - start
    return collect(cfg, run_dir, seconds)


def _short(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def read_val_stats(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "logs" / "val_stats.json"
    history = []
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                raw = json.loads(line)
                entry = {"epoch": int(raw.get("Trainer/epoch", -1))}
                entry.update(
                    {_short(k): float(v) for k, v in raw.items() if "coco_eval" in k and isinstance(v, (int, float))}
                )
                history.append(entry)
    return history


def collect(cfg, run_dir: Path, seconds: float) -> Stage1Result:
    import torch

    from factory_sam3.training.stage1.step_log import read_steps

    checkpoint = Path(run_dir) / "checkpoints" / "checkpoint.pt"
    if not checkpoint.is_file():
        raise RuntimeError(f"training finished without a checkpoint at {checkpoint}")
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    history = read_val_stats(run_dir)
    return Stage1Result(
        run_dir=Path(run_dir),
        config=cfg,
        checkpoint=checkpoint,
        epochs=int(ckpt["epoch"]),
        steps=int(ckpt["steps"]["train"]),
        seconds=seconds,
        val=history[-1] if history else {},
        val_history=history,
        step_rows=read_steps(run_dir),
    )


def categories(cfg) -> list[dict]:
    ann = Path(cfg.run.data_root) / cfg.run.train_split / layout.COCO_ANNOTATIONS
    return json.loads(ann.read_text())["categories"]


def export(result: Stage1Result, out_dir: Path) -> Path:
    """Write models/stage1 atomically (see the module docstring for the layout)."""
    from omegaconf import OmegaConf

    from factory_sam3.io import atomic_dir, write_json
    from factory_sam3.models.export import save_detector_state

    cfg = result.config
    with atomic_dir(out_dir) as tmp:
        save_detector_state(result.checkpoint, tmp / EXPORT_MODEL)
        (tmp / EXPORT_CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
        write_json(
            tmp / EXPORT_INFO,
            {
                "profile": cfg.profile.name,
                "resolution": int(cfg.run.resolution),
                "categories": categories(cfg),
                "epochs": result.epochs,
                "steps": result.steps,
                "format": "sam3 image model state dict, keys prefixed 'detector.' (sam3.model_builder layout)",
            },
        )
    return Path(out_dir)
