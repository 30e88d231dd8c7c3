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
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from factory_sam3 import config, layout
from factory_sam3.config import PARAMS_FILE, Invalid, ModelParams
from factory_sam3.errors import UserError
from factory_sam3.io import file_md5
from factory_sam3.layout import REPO_ROOT
from factory_sam3.training.common import LaunchSettings

CONFIG_DIR = REPO_ROOT / "configs" / "stage1"
REPO_PARAMS = REPO_ROOT / "params.yaml"
CONFIG_NAME = "train"
RUNS_DIR = layout.runs_dir("train_stage1")


@dataclass(frozen=True)
class TrainStage1Params(LaunchSettings):  # + num_gpus, use_cluster, num_nodes, ... (SLURM)
    """The `train_stage1` section of params.yaml (values and comments there; no defaults here)."""

    lr_scale: float
    epochs: int
    resolution: int | None  # None: the profile's (tiny 224, sam3 1008)
    batch_size: int
    gradient_accumulation: int
    num_workers: int
    val_freq: int
    save_freq: int
    seed: int
    freeze: list[str]
    include_negatives: bool
    mask_loss: bool
    max_ann_per_img: int
    min_resize: int
    scheduler_warmup: int
    scheduler_cooldown: int
    scheduler_timescale: int
    log_freq: int
    cpu_threads: int

    def check(self) -> None:
        self.check_launch()
        if self.lr_scale <= 0:
            raise Invalid("lr_scale", f"must be a positive number (got {self.lr_scale!r})")
        for key in (
            "epochs",
            "batch_size",
            "gradient_accumulation",
            "val_freq",
            "save_freq",
            "log_freq",
            "max_ann_per_img",
        ):
            if getattr(self, key) < 1:
                raise Invalid(key, f"must be >= 1 (got {getattr(self, key)})")
        if self.cpu_threads < 0:
            raise Invalid("cpu_threads", "must be >= 0 (0 = torch's default)")
        if self.num_workers < 0:
            raise Invalid("num_workers", "must be >= 0")
        if self.resolution is not None and self.resolution < 56:
            raise Invalid("resolution", f"must be null (profile default) or an integer >= 56 (got {self.resolution!r})")


# hydra `params.*` keys (configs/stage1/train.yaml); the other train_stage1 keys are launcher settings
HYDRA_KEYS = (
    "lr_scale",
    "epochs",
    "resolution",
    "batch_size",
    "gradient_accumulation",
    "num_workers",
    "val_freq",
    "seed",
    "save_freq",
    "freeze",
    "include_negatives",
    "mask_loss",
    "max_ann_per_img",
    "min_resize",
    "scheduler_warmup",
    "scheduler_cooldown",
    "scheduler_timescale",
    "log_freq",
)


@dataclass(frozen=True)
class Stage1Settings:
    """One Stage 1 run: the two params.yaml sections it reads, and what the launcher is told besides (the data
    folder; pretraining also passes its own base learning rates and starting checkpoint)."""

    model: ModelParams
    train: TrainStage1Params
    data_root: str = str(layout.COCO)
    train_split: str = "train"
    val_split: str = "valid"
    base_lr: dict[str, float] | None = None  # overrides the profile's (transformer, vision_backbone, language_backbone)
    tiny_init: str | None = None  # tiny only: start from this checkpoint instead of the shipped weights

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any], params_file: str | os.PathLike = PARAMS_FILE, **launcher: Any
    ) -> Stage1Settings:
        """From the whole params file's mapping: ``model`` and ``train_stage1`` typed and checked."""
        model = config.typed_section(params, "model", ModelParams, params_file)
        return cls(model, config.typed_section(params, "train_stage1", TrainStage1Params, params_file), **launcher)

    @property
    def hydra_params(self) -> dict[str, Any]:
        return {k: getattr(self.train, k) for k in HYDRA_KEYS}


def settings_with(
    model: Mapping[str, Any] | None = None,
    train: Mapping[str, Any] | None = None,
    params_file: str | os.PathLike = REPO_PARAMS,
    **launcher: Any,
) -> Stage1Settings:
    """A params file's ``model`` and ``train_stage1`` sections with some keys replaced: how tests, benchmarks and
    pretraining describe a run (every other value is params.yaml's, checked as the stage checks it)."""
    params = config.load(params_file)
    params["model"] = {**(params.get("model") or {}), **(model or {})}
    params["train_stage1"] = {**(params.get("train_stage1") or {}), **(train or {})}
    return Stage1Settings.from_params(params, params_file, **launcher)


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


def steps_per_epoch(num_images: int, world_size: int, batch_size: int, accumulation: int, ann_file: Path) -> int:
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


def compose(
    settings: Stage1Settings, device: str, world_size: int, run_dir: Path | None = None, checkpoint: str | None = None
):
    """The Hydra config for ``settings`` (an OmegaConf DictConfig, unresolved interpolations intact)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    from factory_sam3.models.sam3_compat import device_settings

    register_resolvers()
    overrides = [f"profile={settings.model.profile}"]
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
    resolution = settings.train.resolution or int(cfg.profile.resolution)
    per_epoch = steps_per_epoch(
        len(train["images"]), world_size, settings.train.batch_size, settings.train.gradient_accumulation, train_ann
    )
    with open_dict(cfg):
        run = cfg.run
        run.data_root = str(data_root)
        run.train_split = settings.train_split
        run.val_split = settings.val_split
        run.resolution = resolution
        run.resize_sizes = resize_sizes(resolution, settings.train.min_resize)
        run.total_steps = per_epoch * settings.train.epochs
        run.checkpoint = checkpoint
        for key, value in device_settings(device).items():
            run[key] = value
        run.cpu_threads = settings.train.cpu_threads if device == "cpu" else 0
        if run_dir is not None:
            run.run_dir = str(run_dir)
        if settings.train.gradient_accumulation > 1:
            # the Trainer expects a list of `gradient_accumulation` batches per step
            cfg.scratch.collate_fn._target_ = "sam3.train.data.collator.collate_fn_api_with_chunking"
            cfg.scratch.collate_fn.num_chunks = settings.train.gradient_accumulation
        if settings.train.mask_loss:
            cfg.scratch.loss.loss_fns_find.append(cfg.scratch.mask_loss)
            cfg.scratch.loss.loss_fn_semantic_seg = cfg.scratch.semantic_loss
        cfg.launcher.gpus_per_node = world_size if device == "cuda" or world_size > 1 else 1
        cfg.launcher.num_nodes = settings.train.num_nodes
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
        start = file_md5(pretrained.TINY_WEIGHTS)
    return {"tiny": asdict(TINY_CONFIG), "starting_weights": start}


def config_hash(cfg, data_root: str, splits: tuple[str, ...]) -> str:
    """Key of a run directory: the resolved config minus the run dir itself, plus the data's bytes.

    A run whose params, config files, model definition or data changed gets a new directory, so it never
    resumes a stale checkpoint; an interrupted run with the same inputs finds its own checkpoints again.
    """
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(cfg, resolve=False)
    container["run"].pop("run_dir", None)
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
