"""Stage 2 over several seeds, with and without exit clips: the spread a single run's bootstrap does not show.

The default pipeline's video test split has 6 videos, so one run's J gain has a wide interval; training noise
(the seed: clips, augmentation, prompts) adds to it. This trains Stage 2 from the current Stage 1 export
(``models/stage1``) once per (setting, seed) and scores each on the test split with evaluate's own code
(DAVIS J/F/J&F, J_present, empty_when_absent), beside the Stage 1 model before Stage 2 and the model-free
references, and writes one table.

    .venv/bin/python benchmarks/stage2_seeds.py --seeds 0 1 2 --exit-probs 0.0 0.5 \\
        --out benchmarks/out/stage2_seeds.json

Needs the data stages and train_stage1 done (``dvc repro train_stage1``). Each run: Stage 2 (~1.5 min on 2 cores)
+ its video evaluation (~20 s); outputs go to a temporary folder, the workspace's models are not touched.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from factory_sam3 import config, layout
from factory_sam3.config import ModelParams
from factory_sam3.evaluation.models import load_pair, video_tracker
from factory_sam3.evaluation.runner import EvalSettings, copy_prompt_tracker, empty_tracker, evaluate_videos
from factory_sam3.models import video as video_models
from factory_sam3.training.stage2.config import Stage2Settings
from factory_sam3.training.stage2.train import run

KEYS = ("J", "F", "J&F", "J_present", "empty_when_absent")


def score(track, test_dir: Path) -> dict:
    with torch.inference_mode():
        result = evaluate_videos(track, test_dir, EvalSettings(bootstrap_samples=0, progress=False))["metrics"]
    return {k: result[k] for k in (*KEYS, "videos", "objects", "frames")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--exit-probs", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/stage2_seeds.json"))
    args = parser.parse_args()

    base = config.load_section("train_stage2", Stage2Settings, args.params)
    torch.set_num_threads(base.cpu_threads)
    model_params = dataclasses.asdict(config.load_section("model", ModelParams, args.params))
    test_dir = layout.YTVIS / "test"
    stage1_dir = layout.MODELS / "stage1"

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # what Stage 2 starts from: needs a Stage 2 export only for its tracker config, so score it from evaluate
        before = load_pair("stage1", model_params, "cpu", stage1_dir, layout.MODELS / "stage2", base.seed)
        rows.append({"model": "stage1 (before Stage 2)", **score(before.track, test_dir)})
        baseline = load_pair("baseline", model_params, "cpu", stage1_dir, layout.MODELS / "stage2", base.seed)
        rows.append({"model": "baseline (pretrained start)", **score(baseline.track, test_dir)})
        rows.append({"model": "reference: prompt copied forward", **score(copy_prompt_tracker, test_dir)})
        rows.append({"model": "reference: empty masks", **score(empty_tracker, test_dir)})
        print(json.dumps(rows[0]), flush=True)
        for exit_prob in args.exit_probs:
            for seed in args.seeds:
                settings = replace(base, seed=seed, exit_prob=exit_prob)
                out = tmp / f"stage2_{exit_prob}_{seed}"
                start = time.monotonic()
                metrics = run(
                    settings,
                    model_params,
                    stage1_dir=stage1_dir,
                    out_dir=out,
                    runs_dir=tmp / "runs",
                    metrics_file=tmp / "m.json",
                    plot_file=tmp / "p.csv",
                )
                tracker = video_tracker(video_models.load_stage2(out, device="cpu"))
                row = {
                    "model": f"Stage 2, exit_prob {exit_prob}, seed {seed}",
                    **score(tracker, test_dir),
                    "heldout_iou": metrics["heldout"]["iou"],
                    "cross_object_iou": metrics["heldout"]["cross_object_iou"],
                    "seconds": round(time.monotonic() - start, 1),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = {}
    for exit_prob in args.exit_probs:
        runs = [r for r in rows if r["model"].startswith(f"Stage 2, exit_prob {exit_prob},")]
        summary[str(exit_prob)] = {
            k: {
                "mean": float(np.mean([r[k] for r in runs])),
                "min": float(min(r[k] for r in runs)),
                "max": float(max(r[k] for r in runs)),
            }
            for k in (*KEYS, "cross_object_iou")
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "summary": summary, "seeds": args.seeds}, indent=1))
    print(f"{'model':42s}" + "".join(f"{k:>19s}" for k in KEYS))
    for r in rows:
        print(f"{r['model']:42s}" + "".join(f"{r[k]:19.3f}" if r[k] is not None else f"{'-':>19s}" for k in KEYS))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
