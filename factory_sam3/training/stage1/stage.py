"""train_stage1: fine-tune SAM3's image model on data/coco with sam3's own Trainer (Stage 1, spatial).

Reads data/coco/{train,valid} and the `model` + `train_stage1` sections of params.yaml; composes the
Hydra config in configs/stage1 (profile tiny: small SAM3 on CPU; sam3: full size on GPU); trains,
resuming from runs/train_stage1/<config hash>/checkpoints/ after an interrupted run; writes
models/stage1/ (model.pt in sam3's builder key layout + config.yaml + stage1.json),
metrics/train_stage1.json and plots/train_stage1_loss.csv, and logs the run to MLflow (params as
`train_stage1.<key>` and `model.<key>`, per-step losses, validation AP, the exported model).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
from pathlib import Path
from statistics import mean, median
from typing import Any

from factory_sam3 import layout
from factory_sam3.config import PARAMS_FILE, as_params_dict
from factory_sam3.config import load as load_params
from factory_sam3.errors import cli_entry
from factory_sam3.io import atomic_file, write_json
from factory_sam3.training import require_validated
from factory_sam3.training.stage1.config import RUNS_DIR, Stage1Settings
from factory_sam3.training.stage1.train import EXPORT_CONFIG, VAL_AP_KEY, Stage1Result, export, train

OUT_DIR = layout.STAGE1_MODEL
METRICS_FILE = layout.metrics_file("train_stage1")
PLOT_FILE = layout.loss_plot("train_stage1")
# loss components written to the plot file (main decoder output; aux/o2m copies stay in runs/.../steps.csv)
PLOT_COMPONENTS = (
    "loss_bbox",
    "loss_giou",
    "loss_ce",
    "presence_loss",
    "loss_mask",
    "loss_dice",
    "loss_semantic_seg",
    "loss_semantic_dice",
)


def loss_summary(rows: list[dict[str, float]], window: int = 10) -> dict[str, float]:
    losses = [r["loss"] for r in rows]
    if not losses:
        return {}
    window = min(window, len(losses))
    first, last = mean(losses[:window]), mean(losses[-window:])
    return {
        "loss_first10_mean": first,
        "loss_last10_mean": last,
        "loss_final": losses[-1],
        "loss_drop_ratio": last / first if first else float("nan"),
    }


def seconds_per_step(rows: list[dict[str, float]], column: str) -> float | None:
    """Median time between consecutive steps of one process (``cpu_s``: CPU time of the training
    process, load-independent; ``wall_s``: wall clock). Steps across a resume are skipped."""
    diffs = [
        b[column] - a[column]
        for a, b in zip(rows, rows[1:])
        if column in a and column in b and b["step"] == a["step"] + 1 and b[column] >= a[column]
    ]
    return round(median(diffs), 3) if diffs else None


def build_metrics(result: Stage1Result, settings: Stage1Settings, num_params: int | None) -> dict[str, Any]:
    rows = result.step_rows
    metrics: dict[str, Any] = {
        "profile": settings.model.profile,
        "epochs": result.epochs,
        "steps": result.steps,
        "seconds": round(result.seconds, 1),  # this invocation (a resumed run only counts what it redid)
        "seconds_per_step": seconds_per_step(rows, "wall_s"),
        "cpu_seconds_per_step": seconds_per_step(rows, "cpu_s"),
        "resolution": int(result.config.run.resolution),
        "num_params": num_params,
        **{k: round(v, 5) for k, v in loss_summary(rows).items()},
    }
    if rows:
        metrics["final_losses"] = {k: round(v, 5) for k, v in rows[-1].items() if k in PLOT_COMPONENTS}
    val = result.val
    if val and VAL_AP_KEY not in val:  # upstream renamed its key: say so rather than report a silent null
        print(
            f"train_stage1: warning: the validation stats have no '{VAL_AP_KEY}' (keys: {', '.join(sorted(val))});"
            " val_segm_AP is null",
            file=sys.stderr,
        )
    metrics["val_segm_AP"] = val.get(VAL_AP_KEY)
    metrics["val_segm_AP50"] = val.get(VAL_AP_KEY + "_50")
    metrics["val_epoch"] = val.get("epoch")
    return metrics


def write_plot(rows: list[dict[str, float]], path: Path = PLOT_FILE) -> None:
    columns = ["step", "loss"] + [c for c in PLOT_COMPONENTS if rows and c in rows[0]]
    with atomic_file(path, "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([int(row["step"])] + [f"{row.get(c, float('nan')):.6g}" for c in columns[1:]])


def count_params(out_dir: Path) -> int | None:
    import torch

    state = torch.load(out_dir / "model.pt", map_location="cpu", weights_only=True)
    return int(sum(v.numel() for v in state.values() if v.is_floating_point()))


def metric_name(name: str) -> str:
    """MLflow metric names allow alphanumerics and _-. /: (COCO's 'AR_maxDets@1' does not pass)."""
    return re.sub(r"[^0-9A-Za-z_\-. /:]", "_", name)


def log_mlflow(params: dict[str, Any], settings: Stage1Settings, result: Stage1Result, metrics: dict) -> None:
    """Params as every stage logs them, ``<section>.<key>`` of params.yaml (``train_stage1.lr_scale``), plus the
    hash of the composed Hydra config (the run folder's name)."""
    from factory_sam3.tracking import record_model, stage_run

    logged = {
        **as_params_dict("train_stage1", settings.train),
        **as_params_dict("model", settings.model),
        "config_hash": result.run_dir.name,
    }
    experiment = (params.get("mlflow") or {}).get("experiment")
    with stage_run(
        "train_stage1",
        params=logged,
        experiment=experiment,
        tags={"profile": settings.model.profile, "run_dir": str(result.run_dir)},
    ) as run:
        for row in result.step_rows:
            step = int(row["step"])
            run.log_metrics({f"train/{k}": v for k, v in row.items() if k == "loss" or k in PLOT_COMPONENTS}, step=step)
        for entry in result.val_history:
            epoch = entry.get("epoch", 0)
            run.log_metrics({metric_name(f"val/{k}"): v for k, v in entry.items() if k != "epoch"}, step=int(epoch))
        run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None})
        run.log_artifact(str(OUT_DIR / EXPORT_CONFIG))
        run.log_artifact(str(METRICS_FILE))
        run.log_artifact(str(PLOT_FILE))
        record_model(run, "stage1-model")  # DVC artifact <-> MLflow run + registry version


def run(params_path: str | os.PathLike = PARAMS_FILE, runs_dir: Path = RUNS_DIR) -> dict[str, Any]:
    """Train, export, write metrics and plot, log to MLflow; returns the metrics."""
    require_validated()
    params = load_params(params_path)
    settings = Stage1Settings.from_params(params, params_path)
    result = train(settings, runs_dir=runs_dir)
    export(result, OUT_DIR)
    metrics = build_metrics(result, settings, count_params(OUT_DIR))
    write_plot(result.step_rows)
    write_json(METRICS_FILE, metrics)
    log_mlflow(params, settings, result, metrics)
    ap = metrics.get("val_segm_AP")
    print(
        f"train_stage1: {metrics['steps']} steps, loss {metrics.get('loss_first10_mean', float('nan')):.2f} -> "
        f"{metrics.get('loss_last10_mean', float('nan')):.2f} (first/last 10), val segm AP "
        f"{ap if ap is None else round(ap, 4)}; model in {OUT_DIR}/"
    )
    return metrics


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="train_stage1", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: %(default)s)")
    run(parser.parse_args(argv).params)
