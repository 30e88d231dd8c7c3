"""Stage 1 settings: params.yaml -> checked settings -> the composed Hydra config sam3's Trainer runs.

The Hydra configs live in configs/stage1 (train.yaml + profile/{tiny,sam3}.yaml). This module turns
params.yaml's ``model`` and ``train_stage1`` sections into overrides, composes, then fills what only
the launcher knows (paths, per-device settings, step counts) and guards against upstream's silent
failure modes on small data (empty resize list, empty loader).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from factory_sam3 import layout
from factory_sam3.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "stage1"
CONFIG_NAME = "train"
RUNS_DIR = layout.RUNS / "train_stage1"
PARAMS_FILE = "params.yaml"


@dataclass
class Stage1Settings:
    """Everything params.yaml controls for Stage 1 (defaults = the guide's, scaled for the tiny CPU run
    where noted in params.yaml)."""

    profile: str = "tiny"
    checkpoint: str | None = None
    device: str = "auto"
    lr_scale: float = 0.1
    epochs: int = 40
    resolution: int | None = None
    batch_size: int = 1
    gradient_accumulation: int = 1
    num_workers: int = 0
    val_freq: int = 10
    seed: int = 123
    save_freq: int = 10
    freeze: list[str] = field(default_factory=list)
    include_negatives: bool = True
    mask_loss: bool = True
    max_ann_per_img: int = 200
    min_resize: int = 480
    scheduler_warmup: int = 20
    scheduler_cooldown: int = 20
    scheduler_timescale: int = 20
    log_freq: int = 10
    cpu_threads: int = 1          # torch threads per CPU training process (0 = torch's default)
    num_gpus: int = 1
    num_nodes: int = 1
    use_cluster: bool = False
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    timeout_hour: int = 72
    cpus_per_task: int = 4
    mem_gb: int | None = None
    base_lr: dict | None = None   # overrides the profile's base LRs (transformer, vision_backbone, language_backbone)
    tiny_init: str | None = None  # tiny only: start from this checkpoint instead of the shipped weights (pretraining)
    data_root: str = str(layout.COCO)
    train_split: str = "train"
    val_split: str = "valid"

    # params.yaml keys that belong to the `model` section
    MODEL_KEYS = ("profile", "checkpoint", "device")
    # hydra `params.*` keys (the rest are launcher settings)
    HYDRA_KEYS = (
        "lr_scale", "epochs", "resolution", "batch_size", "gradient_accumulation", "num_workers", "val_freq",
        "seed", "save_freq", "freeze", "include_negatives", "mask_loss", "max_ann_per_img", "min_resize",
        "scheduler_warmup", "scheduler_cooldown", "scheduler_timescale", "log_freq",
    )

    @classmethod
    def from_params(cls, params: dict[str, Any], params_file: str | os.PathLike = PARAMS_FILE) -> "Stage1Settings":
        model = params.get("model") or {}
        train = params.get("train_stage1")
        if not isinstance(train, dict):
            raise UserError("missing section 'train_stage1'", params_file)
        known = {f for f in cls.__dataclass_fields__}
        values: dict[str, Any] = {}
        for key in cls.MODEL_KEYS:
            if key in model:
                values[key] = model[key]
        for key, value in train.items():
            if key not in known or key in cls.MODEL_KEYS:
                raise UserError(f"unknown key 'train_stage1.{key}'", params_file)
            values[key] = value
        settings = cls(**values)
        settings.check(params_file)
        return settings

    def check(self, params_file: str | os.PathLike = PARAMS_FILE) -> None:
        def bad(key: str, problem: str):
            section = "model" if key in self.MODEL_KEYS else "train_stage1"
            raise UserError(f"'{section}.{key}' {problem}", params_file)

        defaults = Stage1Settings()
        for key in self.__dataclass_fields__:
            value, default = getattr(self, key), getattr(defaults, key)
            if isinstance(default, bool) and not isinstance(value, bool):
                bad(key, f"must be true or false (got {value!r})")
            if isinstance(default, int) and not isinstance(default, bool) and key != "resolution":
                if not isinstance(value, int) or isinstance(value, bool):
                    bad(key, f"must be an integer (got {value!r})")
        if self.profile not in ("tiny", "sam3"):
            bad("profile", f"must be tiny or sam3 (got {self.profile!r})")
        if self.device not in ("auto", "cpu", "cuda"):
            bad("device", f"must be auto, cpu or cuda (got {self.device!r})")
        if not isinstance(self.lr_scale, (int, float)) or isinstance(self.lr_scale, bool) or self.lr_scale <= 0:
            bad("lr_scale", f"must be a positive number (got {self.lr_scale!r})")
        for key in ("epochs", "batch_size", "gradient_accumulation", "val_freq", "save_freq", "num_gpus",
                    "num_nodes", "log_freq", "timeout_hour", "cpus_per_task"):
            if getattr(self, key) < 1:
                bad(key, f"must be >= 1 (got {getattr(self, key)})")
        if self.cpu_threads < 0:
            bad("cpu_threads", "must be >= 0 (0 = torch's default)")
        if self.num_workers < 0:
            bad("num_workers", "must be >= 0")
        if self.resolution is not None and (not isinstance(self.resolution, int) or self.resolution < 56):
            bad("resolution", f"must be null (profile default) or an integer >= 56 (got {self.resolution!r})")
        if not isinstance(self.freeze, list) or not all(isinstance(p, str) for p in self.freeze):
            bad("freeze", "must be a list of module prefixes, e.g. [backbone.language_backbone]")

    @property
    def hydra_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.HYDRA_KEYS}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("model.device is 'cuda' but no CUDA GPU is visible (use auto or cpu)", PARAMS_FILE)
    return device


def read_coco(ann_file: Path) -> dict:
    if not ann_file.is_file():
        raise UserError("COCO annotations not found (run the to_coco stage first: dvc repro to_coco)", ann_file)
    try:
        data = json.loads(ann_file.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"not valid JSON: {err}", ann_file) from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise UserError(f"missing list '{key}'", ann_file)
    if not data["images"]:
        raise UserError("no images", ann_file)
    if not data["categories"]:
        raise UserError("no categories (they are the text prompts)", ann_file)
    return data


def resize_sizes(resolution: int, min_resize: int) -> list[int]:
    """Random-resize sizes as the guide's get_random_resize_scales(resolution, min_size=480), but never
    empty: upstream returns [] when min_size > resolution and the transform then fails."""
    from sam3.train.transforms.basic import get_random_resize_scales

    sizes = get_random_resize_scales(size=resolution, min_size=min(min_resize, resolution), rounded=False)
    return sizes or [resolution]


def steps_per_epoch(num_images: int, world_size: int, batch_size: int, accumulation: int,
                    ann_file: Path) -> int:
    """Optimizer steps per epoch exactly as the Trainer's loader gives them (DistributedSampler pads
    to ceil(N/world), DataLoader drops the last incomplete batch). Zero steps is refused (sam3#362)."""
    per_rank = math.ceil(num_images / world_size)
    steps = per_rank // (batch_size * accumulation)
    if steps == 0:
        raise UserError(
            f"{num_images} training images give an empty epoch with batch_size {batch_size} x "
            f"gradient_accumulation {accumulation} x {world_size} process(es) (drop_last): lower "
            "train_stage1.batch_size / gradient_accumulation / num_gpus or add images",
            ann_file,
        )
    return steps


def compose(settings: Stage1Settings, device: str, world_size: int, run_dir: Path | None = None,
            checkpoint: str | None = None):
    """The Hydra config for ``settings`` (an OmegaConf DictConfig, unresolved interpolations intact)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    from factory_sam3.models.sam3_compat import device_settings

    register_resolvers()
    overrides = [f"profile={settings.profile}"]
    for group, value in (settings.base_lr or {}).items():
        overrides.append(f"profile.base_lr.{group}={float(value)}")
    for key, value in settings.hydra_params.items():
        overrides.append(f"params.{key}={json.dumps(value)}")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="train_stage1"):
        cfg = hydra_compose(config_name=CONFIG_NAME, overrides=overrides)

    data_root = Path(settings.data_root)
    train_ann = data_root / settings.train_split / layout.COCO_ANNOTATIONS
    train = read_coco(train_ann)
    read_coco(data_root / settings.val_split / layout.COCO_ANNOTATIONS)
    resolution = settings.resolution or int(cfg.profile.resolution)
    per_epoch = steps_per_epoch(len(train["images"]), world_size, settings.batch_size,
                                settings.gradient_accumulation, train_ann)
    with open_dict(cfg):
        run = cfg.run
        run.data_root = str(data_root)
        run.train_split = settings.train_split
        run.val_split = settings.val_split
        run.resolution = resolution
        run.resize_sizes = resize_sizes(resolution, settings.min_resize)
        run.total_steps = per_epoch * settings.epochs
        run.checkpoint = checkpoint
        for key, value in device_settings(device).items():
            run[key] = value
        run.cpu_threads = settings.cpu_threads if device == "cpu" else 0
        if run_dir is not None:
            run.run_dir = str(run_dir)
        if settings.gradient_accumulation > 1:
            # the Trainer expects a list of `gradient_accumulation` batches per step
            cfg.scratch.collate_fn._target_ = "sam3.train.data.collator.collate_fn_api_with_chunking"
            cfg.scratch.collate_fn.num_chunks = settings.gradient_accumulation
        if settings.mask_loss:
            cfg.scratch.loss.loss_fns_find.append(cfg.scratch.mask_loss)
            cfg.scratch.loss.loss_fn_semantic_seg = cfg.scratch.semantic_loss
        cfg.launcher.gpus_per_node = world_size if device == "cuda" or world_size > 1 else 1
        cfg.launcher.num_nodes = settings.num_nodes
        sub = cfg.submitit
        sub.use_cluster = settings.use_cluster
        sub.partition, sub.account, sub.qos = settings.partition, settings.account, settings.qos
        sub.timeout_hour, sub.cpus_per_task, sub.mem_gb = settings.timeout_hour, settings.cpus_per_task, settings.mem_gb
    OmegaConf.resolve(OmegaConf.create(OmegaConf.to_container(cfg, resolve=False)))  # fail early on bad values
    return cfg


def model_definition(profile: str) -> dict:
    """What the config does not say about the model: the tiny profile's dimensions and options (models/tiny.py)
    and which starting weights it loads. A change there must not resume a checkpoint of the old model (it did:
    sam3's Trainer then fails with a state-key mismatch)."""
    if profile != "tiny":
        return {}
    from factory_sam3.models import pretrained
    from factory_sam3.models.tiny import TINY_CONFIG

    start = "random"
    if pretrained.TINY_WEIGHTS.is_file() and not pretrained.use_random_init():
        start = hashlib.md5(pretrained.TINY_WEIGHTS.read_bytes()).hexdigest()
    return {"tiny": asdict(TINY_CONFIG), "starting_weights": start}


def config_hash(cfg, data_root: str, splits: tuple[str, ...]) -> str:
    """Key of a run directory: the resolved config minus the run dir itself, plus the data's bytes.

    A run whose params, config files, model definition or data changed gets a new directory, so it never
    resumes a stale checkpoint; an interrupted run with the same inputs finds its own checkpoints again.
    """
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(cfg, resolve=False)
    container["run"].pop("run_dir", None)
    container["submitit"] = None  # where it runs does not change what it learns
    container["model_definition"] = model_definition(str(cfg.profile.name))
    digest = hashlib.sha256(json.dumps(container, sort_keys=True, default=str).encode())
    for split in splits:
        ann = Path(data_root) / split / layout.COCO_ANNOTATIONS
        digest.update(ann.read_bytes())
    return digest.hexdigest()[:12]


_RESOLVERS_DONE = False


def register_resolvers() -> None:
    """sam3's OmegaConf resolvers (times, add, ...); registering twice raises upstream."""
    global _RESOLVERS_DONE
    from omegaconf import OmegaConf

    if _RESOLVERS_DONE or OmegaConf.has_resolver("times"):
        _RESOLVERS_DONE = True
        return
    from sam3.train.utils.train_utils import register_omegaconf_resolvers

    register_omegaconf_resolvers()
    _RESOLVERS_DONE = True
