"""Which device runs a model: one rule for training, evaluation and predict.

``auto`` (or ``None``) is the GPU when one is visible, else the CPU; ``cpu``; ``cuda`` or ``cuda:N``, a clear
error naming the params key when no GPU is visible; anything else is an error too.
"""

from __future__ import annotations

import os
import platform

from factory_sam3.config import PARAMS_FILE, device_problem
from factory_sam3.errors import UserError


def resolve_device(
    requested: str | None,
    key: str = "model.device",
    params_file: str | os.PathLike = PARAMS_FILE,
    gpus_elsewhere: bool = False,
) -> str:
    """``gpus_elsewhere``: the model runs on other machines' GPUs (a SLURM job), so ``auto`` means ``cuda`` and
    no GPU has to be visible here."""
    import torch

    requested = (requested or "auto").lower()
    gpu_here = gpus_elsewhere or torch.cuda.is_available()
    if requested == "auto":
        return "cuda" if gpu_here else "cpu"
    problem = device_problem(requested)
    if problem:
        raise UserError(f"'{key}' {problem}", params_file)
    if requested.startswith("cuda") and not gpu_here:
        raise UserError(f"'{key}' is {requested!r} but no CUDA GPU is visible here (use auto or cpu)", params_file)
    return requested


def training_device(
    requested: str | None, use_cluster: bool, key: str = "model.device", params_file: str | os.PathLike = PARAMS_FILE
) -> str:
    """The device a training run uses: submitted to SLURM it runs on the cluster's GPU nodes, so there ``auto``
    (and ``cuda``) mean the GPU whatever the submitting host has; ``cpu`` stays the CPU."""
    return resolve_device(requested, key, params_file, gpus_elsewhere=use_cluster)


def device_name(device: str) -> str:
    """What ran the model, for the speed numbers: the GPU's name, or the CPU and its thread count."""
    import torch

    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    cpu = platform.processor() or platform.machine()
    return f"cpu ({cpu}, {torch.get_num_threads()} threads)"
