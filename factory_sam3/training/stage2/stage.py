"""train_stage2: temporal fine-tuning of SAM3's tracker on YTVIS clips (Stage 2).

Reads data/ytvis/{train,valid} and the Stage 1 export models/stage1 (detector + image trunk), trains the
tracker (memory encoder, memory attention, SAM mask decoder, object pointers, tracker neck) SAM2-style, and
writes models/stage2/ (model.pt: full SAM3 video-model state dict, detector.* + tracker.*; config.json),
metrics/train_stage2.json and plots/train_stage2_loss.csv; logs params (`train_stage2.<key>`, `model.<key>`),
per-step losses and cross-object IoU (live, so a collapse shows while it happens) and artifacts to MLflow.
Resumable: checkpoints live in runs/train_stage2/<settings hash>/, so rerunning after a kill continues.
Settings: the `train_stage2` and `model` sections of params.yaml.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
from typing import Any

from factory_sam3 import config, layout
from factory_sam3.config import PARAMS_FILE, ModelParams, as_params_dict
from factory_sam3.errors import cli_entry
from factory_sam3.training import require_validated
from factory_sam3.training.stage2.config import Stage2Settings

STAGE = "train_stage2"


def run(params_path: str | os.PathLike = PARAMS_FILE) -> dict[str, Any]:
    """Train, export models/stage2, write metrics and plot, log to MLflow; returns the metrics."""
    from factory_sam3.tracking import record_model, stage_run
    from factory_sam3.training.stage2 import train

    require_validated()
    params = config.load(params_path)
    settings = config.typed_section(params, STAGE, Stage2Settings, params_path)
    model = config.typed_section(params, "model", ModelParams, params_path)
    model_params = dataclasses.asdict(model)
    logged = {**as_params_dict(STAGE, settings), **as_params_dict("model", model)}
    with stage_run(STAGE, params=logged) as tracked:

        def live(row: dict) -> None:  # as it trains: a collapse (cross-object IoU near 1) shows while it happens
            tracked.log_metrics({k: v for k, v in row.items() if k != "step" and v == v}, step=int(row["step"]))

        metrics = train.run(settings, model_params, on_log=live)
        if not train.logs_live(settings):  # DDP workers and SLURM jobs cannot: the per-step rows from the plot file
            with train.PLOT_FILE.open() as handle:
                for row in csv.DictReader(handle):
                    step = int(row.pop("step"))
                    tracked.log_metrics({k: float(v) for k, v in row.items() if v not in ("", "nan")}, step=step)
        flat = {f"final_{k}": v for k, v in metrics["final"].items()}
        if metrics.get("heldout"):
            flat.update({f"heldout_{k}": v for k, v in metrics["heldout"].items() if isinstance(v, (int, float))})
        flat.update({"seconds": metrics["seconds"], "s_per_step": metrics["s_per_step"]})
        tracked.log_metrics(flat)
        for path in (train.METRICS_FILE, train.PLOT_FILE, layout.STAGE2_MODEL / "config.json"):
            tracked.log_artifact(path)
        record_model(tracked, "stage2-model")  # DVC artifact <-> MLflow run + registry version
    show(metrics)
    return metrics


def show(metrics: dict[str, Any]) -> None:
    heldout = metrics.get("heldout") or {}

    def num(value):
        return "n/a" if value is None else f"{value:.3f}"

    print(
        f"{STAGE}: {metrics['steps']} steps in {metrics['seconds']:.0f} s; loss {metrics['loss_first10']:.3f} "
        f"-> {metrics['loss_last10']:.3f}; held-out IoU {heldout.get('iou', float('nan')):.3f} "
        f"(copy-forward {heldout.get('copy_iou', float('nan')):.3f}); cross-object IoU "
        f"{num(heldout.get('cross_object_iou'))} (ground truth {num(heldout.get('gt_cross_object_iou'))})"
    )


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="train_stage2", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: %(default)s)")
    run(parser.parse_args(argv).params)
