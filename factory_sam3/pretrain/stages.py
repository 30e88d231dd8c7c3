"""The pretraining pipeline's stages (pretrain/dvc.yaml), run from the ``pretrain/`` folder.

    generic_data -> tracker -> detector -> gate

The tracker (with the image trunk) learns first, from random weights, on generic clips; the detector's heads and
text encoder then learn the generic concepts by name on that trunk, frozen, so the tracker stays valid (a dense
phase, then sam3's own loss: ``pretrain.detector``); the gate measures the assembled model.

It is a DVC pipeline of its own: the main ``dvc repro`` (dvc.yaml at the root) never starts it, and nothing of
the main pipeline is among its dependencies' outputs, so a change there never retrains it. ``make pretrain``
runs it and copies the gated weights to ``models/pretrained/`` (the file in git the main pipeline reads);
``pretrain/dvc.lock`` pins their md5 (a test checks the shipped file against it).
"""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from factory_sam3.config import load as load_params
from factory_sam3.errors import UserError
from factory_sam3.io import atomic_dir, atomic_file, write_json
from factory_sam3.layout import REPO_ROOT

PRETRAIN = REPO_ROOT / "pretrain"
PARAMS = PRETRAIN / "params.yaml"
DATA = PRETRAIN / "data" / "generic_coco"
OUT = PRETRAIN / "out"
METRICS = PRETRAIN / "metrics"
PLOTS = PRETRAIN / "plots"
RUNS = REPO_ROOT / "runs"
DETECTOR_OUT = OUT / "detector"
TRACKER_OUT = OUT / "tracker"
WEIGHTS_OUT = OUT / "tiny_sam3.pt"
INFO_OUT = OUT / "tiny_sam3.json"
EXPERIMENT = "factory-sam3-pretrain"


def _section(params: dict, name: str, params_path: Path = PARAMS) -> dict:
    value = params.get(name)
    if not isinstance(value, dict):
        raise UserError(f"missing section '{name}'", params_path)
    return value


def _settings(cls, params: dict, name: str, params_path: Path, **fixed):
    """``cls`` (a settings dataclass) from the ``name`` section; an unknown key or a wrong type is a UserError
    naming ``name.key``, never a traceback."""
    section = _section(params, name, params_path)
    unknown = sorted(set(section) - set(cls.__dataclass_fields__))
    if unknown:
        raise UserError(f"unknown key '{name}.{unknown[0]}'", params_path)
    values = {
        k: (tuple(v) if isinstance(v, list) and isinstance(getattr(cls, k, None), tuple) else v)
        for k, v in section.items()
    }
    try:
        settings = cls(**fixed, **values)
        settings.check(params_path)
    except (TypeError, ValueError) as err:
        raise UserError(f"section '{name}': {err}", params_path) from None
    return settings


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with atomic_file(path, "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row.get(c) for c in columns])


def generic_data(params_path: Path = PARAMS) -> None:
    from factory_sam3.pretrain.generic_coco import write_generic_coco

    params = load_params(params_path)
    data = _section(params, "data", params_path)
    start = time.monotonic()
    try:
        write_generic_coco(
            DATA,
            int(params.get("seed", 0)),
            int(data["train_images"]),
            int(data["eval_images"]),
            float(data.get("negative_prob", 0.1)),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"section 'data' needs integer train_images and eval_images ({err!r})", params_path) from None
    print(
        f"pretrain generic_data: {data['train_images']} train + {data['eval_images']} valid + "
        f"{data['eval_images']} test images in {time.monotonic() - start:.0f} s -> {DATA}"
    )


def detector(params_path: Path = PARAMS) -> None:
    """The detector heads and text encoder learn the generic concepts by name on the tracker stage's trunk, frozen:
    a dense phase, then sam3's own loss (``pretrain.detector.train``); resumable from ``runs/pretrain_detector``."""
    from factory_sam3.pretrain.detector import DetectorSettings, export_detector, train
    from factory_sam3.tracking import stage_run

    params = load_params(params_path)
    settings = _settings(DetectorSettings, params, "detector", params_path)
    run_dir = RUNS / "pretrain_detector" / settings.key()
    with stage_run(
        "pretrain_detector",
        params={"detector": asdict(settings)},
        experiment=EXPERIMENT,
        tags={"profile": "tiny", "run_dir": str(run_dir)},
    ) as run:
        model, history, evals = train(
            settings,
            DATA,
            TRACKER_OUT / "model.pt",
            run_dir,
            log_metrics=lambda m, s: run.log_metrics({k: v for k, v in m.items() if v is not None}, step=s),
        )
        export_detector(model, DETECTOR_OUT, settings)
        dense = [r for r in history if r["phase"] == "dense"]
        full = [r for r in history if r["phase"] == "full"]
        metrics = {
            "steps": settings.total_steps,
            "dense_steps": settings.dense_steps,
            "valid": evals[-1] if evals else None,
            "evals": evals,
            "dense_semantic_iou_last50": _mean(
                [r["semantic_iou_present"] for r in dense[-50:] if r.get("semantic_iou_present") is not None]
            ),
            "presence_acc_last50": _mean([r["presence_dec_acc"] for r in full[-50:] if "presence_dec_acc" in r]),
            "giou_loss_last50": _mean([r["loss_giou"] for r in full[-50:] if "loss_giou" in r]),
            "proposal_giou_loss_last50": _mean([r["loss_giou_fs"] for r in full[-50:] if "loss_giou_fs" in r]),
        }
        write_json(METRICS / "detector.json", metrics)
        _write_csv(
            PLOTS / "detector_loss.csv", [{"step": r["step"], "loss": r["loss"]} for r in history], ["step", "loss"]
        )
        run.log_artifact(str(METRICS / "detector.json"))
    print(f"pretrain detector: {settings.total_steps} steps; validation {evals[-1] if evals else {}}")


def tracker(params_path: Path = PARAMS) -> None:
    import torch

    from factory_sam3.models.video import STAGE2_CONFIG, export_state_dict
    from factory_sam3.pretrain.tracker import TrackerSettings, train
    from factory_sam3.tracking import stage_run

    params = load_params(params_path)
    settings = _settings(TrackerSettings, params, "tracker", params_path)
    run_dir = RUNS / "pretrain_tracker" / settings.key()
    with stage_run(
        "pretrain_tracker",
        params={"tracker": vars(settings)},
        experiment=EXPERIMENT,
        tags={"profile": "tiny", "run_dir": str(run_dir)},
    ) as run:
        model, history, evals = train(
            settings,
            run_dir,
            log_metrics=lambda m, s: run.log_metrics({k: v for k, v in m.items() if v is not None}, step=s),
        )
        with atomic_dir(TRACKER_OUT) as tmp:
            torch.save(export_state_dict(model), tmp / "model.pt")
            (tmp / STAGE2_CONFIG).write_text(json.dumps(model.config, indent=2, sort_keys=True) + "\n")
        metrics = {
            "steps": settings.steps,
            "heldout": evals[-1] if evals else None,
            "heldout_at_start": evals[0] if evals else None,
            "evals": evals,
            "loss_first25": _mean([r["loss"] for r in history[:25]]),
            "loss_last25": _mean([r["loss"] for r in history[-25:]]),
        }
        write_json(METRICS / "tracker.json", metrics)
        _write_csv(PLOTS / "tracker_loss.csv", history, ["step", "loss", "focal", "dice", "iou", "object"])
        run.log_artifact(str(METRICS / "tracker.json"))


def gate(params_path: Path = PARAMS) -> int:
    """The gate (``pretrain.gate``): report always, weights only when it passes; 1 when it does not."""
    from factory_sam3.models.build import build_image_model
    from factory_sam3.models.video import build_video_model, init_from_checkpoints
    from factory_sam3.pretrain.gate import GateSettings, check, detection_report, export_weights, tracking_report

    params = load_params(params_path)
    settings = _settings(GateSettings, params, "gate", params_path)
    # the assembled model: detector heads from the detector stage, trunk (frozen there) and tracker from the tracker
    # stage -- exactly how Stage 2 assembles a Stage 1 export with its starting tracker
    video_model = build_video_model("tiny", seed=None)
    init_from_checkpoints(video_model, DETECTOR_OUT, TRACKER_OUT / "model.pt")
    video_model.eval()
    tracking = tracking_report(video_model, settings)
    image_model = build_image_model("tiny", checkpoint=DETECTOR_OUT / "model.pt")
    detection = detection_report(image_model, DATA / "test", settings.max_images)
    verdict = check(tracking, detection, settings)
    report = {**verdict, "tracking": tracking, "detection": detection}
    write_json(METRICS / "gate.json", report)
    for path in (WEIGHTS_OUT, INFO_OUT):
        path.unlink(missing_ok=True)
    if not verdict["passed"]:
        print("pretrain gate: FAILED, no weights written:\n  " + "\n  ".join(verdict["failures"]), file=sys.stderr)
        return 1
    md5 = export_weights(video_model, WEIGHTS_OUT)
    write_json(
        INFO_OUT,
        {
            "md5": md5,
            "config": video_model.config,
            "gate": report,
            "made_by": "make pretrain (pretrain/dvc.yaml)",
            "dtype": "float16",
        },
    )
    print(
        f"pretrain gate: passed (cross-object IoU {tracking['cross_object_iou']}, J {tracking['J']} vs copy "
        f"{tracking['copy_J']}, segm AP {detection.get('segm_AP')}); weights -> {WEIGHTS_OUT}"
    )
    return 0


def _mean(values: list[float]) -> Any:
    return round(sum(values) / len(values), 4) if values else None


STAGES = {"generic_data": generic_data, "tracker": tracker, "detector": detector, "gate": gate}
