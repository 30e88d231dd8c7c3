#!/usr/bin/env python3
"""One full-size Stage 2 training step on a GPU: s/step and peak memory.

The `sam3` profile video model (full-size detector + tracker, random weights: nothing is downloaded), a clip of
8 frames at 1008 px with 3 objects, bf16 autocast, the default freezing (trunk and detector frozen; tracker and
its neck train), GT-mask prompt on the first frame plus a box-prompted run with one correction click, and
with/without per-layer activation checkpointing of the memory attention (the baseline is the unchecked step,
run side by side in the same process). Run:

    python benchmarks/gpu_stage2_step.py [--frames 8] [--objects 3] [--steps 3] [--out benchmarks/out/gpu_stage2.json]

Without CUDA it says so and exits 2 (it measures nothing on CPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting (after one warm-up step)")
    parser.add_argument("--out", default="benchmarks/out/gpu_stage2.json")
    args = parser.parse_args()

    import numpy as np
    import torch

    if not torch.cuda.is_available():
        print(
            "gpu_stage2_step: no CUDA device on this machine; this benchmark needs a GPU "
            "(run it where one is available).",
            file=sys.stderr,
        )
        return 2

    from factory_sam3.models.video import build_video_model
    from factory_sam3.training.stage2.data import ClipBatch
    from factory_sam3.training.stage2.model import ClipForward, ForwardOptions
    from factory_sam3.training.stage2.train import apply_freeze, set_train_modes

    device = "cuda"
    t0 = time.time()
    model = build_video_model("sam3", seed=0).to(device)
    build_s = time.time() - t0
    counts = apply_freeze(model, ["detector"], ["tracker", "detector.backbone.vision_backbone.sam2_convs"])
    set_train_modes(model)
    size = model.image_size
    T, B = args.frames, args.objects
    g = torch.Generator().manual_seed(0)
    images = torch.randn(T, 3, size, size, generator=g)
    masks = torch.zeros(T, B, 1, size, size, dtype=torch.bool)
    for t in range(T):
        for b in range(B):
            y, x = 100 + 150 * b, 100 + 40 * t
            masks[t, b, 0, y : y + 120, x : x + 160] = True
    batch = ClipBatch(
        images,
        masks,
        masks.flatten(2).any(-1),
        torch.ones(T, dtype=torch.bool),
        list(range(B)),
        list(range(T)),
        "synthetic",
    ).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    results = {
        "device": torch.cuda.get_device_name(0),
        "frames": T,
        "objects": B,
        "resolution": size,
        "build_s": round(build_s, 1),
        "trainable_params": counts["trainable"],
        "frozen_params": counts["frozen"],
        "settings": {},
    }
    for name, options in (
        ("mask_prompt", ForwardOptions(prompt_probs={"mask": 1.0})),
        ("mask_prompt_act_ckpt", ForwardOptions(prompt_probs={"mask": 1.0}, checkpoint_memory_attention=True)),
        ("box_prompt_1_click", ForwardOptions(prompt_probs={"box": 1.0}, correction_clicks=1)),
    ):
        forward = ClipForward(model, options)
        times = []
        torch.cuda.reset_peak_memory_stats()
        for step in range(args.steps + 1):
            torch.cuda.synchronize()
            start = time.time()
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = forward(batch, np.random.default_rng(step))
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, 0.1)
            optimizer.step()
            torch.cuda.synchronize()
            if step:  # the first step warms up kernels and allocator
                times.append(time.time() - start)
        results["settings"][name] = {
            "s_per_step": round(float(np.mean(times)), 3),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "loss": round(float(out["loss"]), 4),
        }
        print(name, results["settings"][name], flush=True)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
