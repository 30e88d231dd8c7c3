"""Stage 2 settings: the `train_stage2` section of params.yaml, typed and checked (factory_sam3.config).

Every key is required and has no default here: params.yaml is the one place the values live. Library callers
(tests, benchmarks) start from the repository's section and ``dataclasses.replace`` what they change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from factory_sam3 import config
from factory_sam3.config import Invalid
from factory_sam3.training.common import LaunchSettings

SECTION = "train_stage2"
PROMPTS = ("mask", "box", "points")  # what can prompt a clip's first frame (model.py draws one per clip)


@dataclass(frozen=True)
class Stage2Settings(LaunchSettings):  # + num_gpus, use_cluster, num_nodes, ... (SLURM)
    lr_scale: float  # learning rate = base_lr[model.profile] x lr_scale
    base_lr: dict[str, float]
    steps: int  # optimiser steps
    grad_accum: int  # clips per step per process
    frames_per_clip: int
    stride_prob: float  # share of clips with a stride drawn from [stride_min, stride_max]
    stride_min: int
    stride_max: int
    exit_prob: float  # share of clips starting where one of their objects leaves the view
    reverse_prob: float
    max_objects: int
    prompt_probs: dict[str, float]
    num_cond_frames: int
    correction_clicks: int
    freeze: list[str]  # parameter-name prefixes; the longest matching prefix of freeze/train wins
    train: list[str]
    resolution: int | None  # None: Stage 1's
    weight_decay: float
    warmup_steps: int
    grad_clip: float
    act_ckpt: bool
    augment: bool
    save_freq: int
    seed: int
    eval_frames: int
    log_freq: int
    cpu_threads: int

    @classmethod
    def from_params(cls, params: dict, params_file: str | os.PathLike = config.PARAMS_FILE) -> Stage2Settings:
        """The section as read from ``params_file`` (a mapping): unknown, missing or ill-typed keys are one
        clear error naming ``train_stage2.<key>`` and the file."""
        return config.from_mapping(cls, params, SECTION, params_file)

    def check(self) -> None:
        self.check_launch()
        for key in (
            "steps",
            "grad_accum",
            "frames_per_clip",
            "stride_min",
            "stride_max",
            "max_objects",
            "num_cond_frames",
            "save_freq",
            "eval_frames",
            "log_freq",
            "cpu_threads",
        ):
            if getattr(self, key) < 1:
                raise Invalid(key, f"must be an integer >= 1, got {getattr(self, key)!r}")
        for key in ("correction_clicks", "warmup_steps", "seed"):
            if getattr(self, key) < 0:
                raise Invalid(key, f"must be an integer >= 0, got {getattr(self, key)!r}")
        if self.frames_per_clip < 2:
            raise Invalid("frames_per_clip", "must be at least 2 (a prompted frame and one to track)")
        if self.stride_min > self.stride_max:
            raise Invalid("stride_min", f"is larger than stride_max ({self.stride_min} > {self.stride_max})")
        if self.num_cond_frames >= self.frames_per_clip:
            raise Invalid("num_cond_frames", "must be smaller than frames_per_clip (frames must be left to track)")
        for key in ("reverse_prob", "stride_prob", "exit_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise Invalid(key, f"must be a number in [0, 1], got {getattr(self, key)!r}")
        probs = self.prompt_probs
        if not probs or set(probs) - set(PROMPTS):
            raise Invalid("prompt_probs", f"must map some of {', '.join(PROMPTS)} to probabilities")
        if any(v < 0 for v in probs.values()) or sum(probs.values()) <= 0:
            raise Invalid("prompt_probs", "needs non-negative probabilities with a positive sum")
        for key in ("lr_scale", "weight_decay", "grad_clip"):
            if getattr(self, key) < 0:
                raise Invalid(key, f"must be a non-negative number, got {getattr(self, key)!r}")
        if self.resolution is not None and self.resolution < 56:
            raise Invalid("resolution", f"must be null (Stage 1's) or an integer >= 56, got {self.resolution!r}")
