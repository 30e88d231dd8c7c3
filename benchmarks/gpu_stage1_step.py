#!/usr/bin/env python3
"""One full-size SAM3 Stage 1 training step on a GPU: s/step and peak GPU memory, with and without mask loss.

Full SAM3 image model (sam3.model_builder, ~840M params, random weights: nothing is downloaded), 1008 px,
bf16 autocast, batch 1 (one image, its 4 category prompts), the Stage 1 losses and AdamW from
configs/stage1 (profile sam3). Data: a small synthetic COCO set written to a temp dir. Each variant runs
``--warmup`` untimed steps, then ``--steps`` timed ones (median reported).

    python benchmarks/gpu_stage1_step.py                 # both variants, prints a table + JSON
    python benchmarks/gpu_stage1_step.py --smoke-cpu     # tiny profile on CPU: checks the script only

On a machine without CUDA it exits (code 3) with a message, unless --smoke-cpu.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build_parts(mask_loss: bool, device: str, profile: str, data_root: Path):
    """Composed config -> (model, loss, optimizer wrapper, train loader) exactly as the Trainer builds them."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf, open_dict

    from factory_sam3.models import build_image_model
    from factory_sam3.training.stage1.config import compose, settings_with

    settings = settings_with(
        model={"profile": profile, "device": device, "checkpoint": "unused"},
        train={"mask_loss": mask_loss, "epochs": 1, "batch_size": 1},
        data_root=str(data_root),
    )
    cfg = compose(settings, device, world_size=1)
    with open_dict(cfg):
        cfg.scratch.enable_segmentation = mask_loss  # no mask loss: no segmentation head, no GT masks
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    model = build_image_model(profile, device=device, train=True, random_init=(profile == "sam3"))
    if not mask_loss:
        model.segmentation_head = None
    loss = instantiate(cfg.scratch.loss, _convert_="all").to(device)
    from sam3.train.optim.optimizer import construct_optimizer

    optim = construct_optimizer(
        model, cfg.trainer.optim.optimizer, cfg.trainer.optim.options, cfg.trainer.optim.param_group_modifiers
    )
    data = instantiate(cfg.trainer.data.train)
    return model, loss, optim, data, cfg


def measure(mask_loss: bool, device: str, profile: str, data_root: Path, warmup: int, steps: int) -> dict:
    import torch
    from sam3.model.utils.misc import copy_data_to_device

    model, loss_fn, optim, data, cfg = build_parts(mask_loss, device, profile, data_root)
    amp = device == "cuda"
    loader = iter(data.get_loader(epoch=0))
    times = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(warmup + steps):
        batch = next(loader)
        _, batch = batch.popitem()
        batch = copy_data_to_device(batch, torch.device(device), non_blocking=True)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        optim.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=amp):
            out = model(batch)
            targets = [model.back_convert(t) for t in batch.find_targets]
            losses = loss_fn(out, targets)
        losses["core_loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optim.step(where=0.5, step=i + 1)
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return {
        "mask_loss": mask_loss,
        "profile": profile,
        "resolution": int(cfg.run.resolution),
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "s_per_step_median": round(statistics.median(times), 3),
        "s_per_step_all": [round(t, 3) for t in times],
        "peak_gpu_mem_GiB": None if peak is None else round(peak, 2),
        "loss": float(losses["core_loss"].detach().float()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--smoke-cpu", action="store_true", help="tiny profile on CPU (checks the script only)")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args()

    import torch

    if args.smoke_cpu:
        device, profile = "cpu", "tiny"
        torch.set_num_threads(1)  # more threads than free cores spin-wait on a shared machine
    elif not torch.cuda.is_available():
        print(
            "gpu_stage1_step: no CUDA GPU on this machine; run it on a GPU host "
            "(or --smoke-cpu to check the script with the tiny profile)",
            file=sys.stderr,
        )
        return 3
    else:
        device, profile = "cuda", "sam3"
    import torch.distributed as dist

    from factory_sam3.models import sam3_compat
    from factory_sam3.training.common import free_port
    from tests.helpers_stage1 import make_coco

    sam3_compat.apply()
    os.environ.update(MASTER_ADDR="localhost", MASTER_PORT=str(free_port()), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    dist.init_process_group("nccl" if device == "cuda" else "gloo")  # the loss all-reduces its normaliser
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = make_coco(Path(tmp) / "coco", train=args.warmup + args.steps + 2, valid=1, test=1, width=640, height=480)
        for mask_loss in (True, False):
            results.append(measure(mask_loss, device, profile, root, args.warmup, args.steps))
            if device == "cuda":
                torch.cuda.empty_cache()
    dist.destroy_process_group()
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    print(f"device: {name}   torch {torch.__version__}")
    print(f"{'mask loss':>10} {'res':>5} {'params':>8} {'s/step':>8} {'peak GiB':>9}")
    for r in results:
        print(
            f"{str(r['mask_loss']):>10} {r['resolution']:>5} {r['params_M']:>7}M {r['s_per_step_median']:>8} "
            f"{str(r['peak_gpu_mem_GiB']):>9}"
        )
    payload = {"device": name, "torch": torch.__version__, "results": results}
    print(json.dumps(payload))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
