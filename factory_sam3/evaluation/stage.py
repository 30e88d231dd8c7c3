"""The evaluate stage: the starting models, Stage 1 and the fine-tuned models, images and video, speed,
pictures, MLflow.

Writes
    metrics/evaluate.json          DVC metrics, flat enough for `dvc exp show`:
        {"baseline":  the profile's starting models (detector; detector + tracker)
                      {"segm_AP", "segm_AP_ci95": [lo, hi], "images", "instances", "bbox_AP", "J", "F", "J&F",
                       "J&F_ci95", "videos", "objects", "frames", "vis_mAP", "vis_videos", ..., "images_per_s",
                       "frames_per_s"},
         "stage1":    video only: Stage 1's detector + the starting tracker (what Stage 2 starts from)
                      {"J", "F", "J&F", "J&F_ci95", ..., "vis_mAP", ...},
         "finetuned": Stage 1 export (images) and Stage 2 export (video), as "baseline",
         "gain":        finetuned - baseline, with "J&F_ci95" etc. a paired bootstrap over videos,
         "gain_stage1": stage1 - baseline (video: what Stage 1 gives the tracker),
         "gain_stage2": finetuned - stage1 (video: what Stage 2 adds),
         "reference": {"copy_prompt_J&F", "empty_J&F", ..., "videos", "objects", "frames"}  model-free video
                      references on the same objects and frames,
         "device": ..., "profile": ..., "bootstrap": {samples, seed, what was resampled}}
    reports/evaluate/              pictures only (DVC image plots): overlay_<model>_NN.png (ground truth left,
                                   prediction right), tracking_<model>.gif, loss_curves.png
    reports/evaluate_details.json  per-class AP and per-video J/F, where each number came from
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

from factory_sam3 import layout
from factory_sam3.atomic import atomic_dir, write_json
from factory_sam3.errors import UserError
from factory_sam3.evaluation import metrics as metric_code
from factory_sam3.evaluation.models import LABELS
from factory_sam3.evaluation.pictures import loss_curves
from factory_sam3.evaluation.runner import (EvalSettings, copy_prompt_tracker, empty_tracker, evaluate_images,
                                            evaluate_videos, evaluate_vis)

METRICS_FILE = layout.METRICS / "evaluate.json"
PICTURES_DIR = Path("reports") / "evaluate"
DETAILS_FILE = Path("reports") / "evaluate_details.json"
LOSS_CSVS = {"Stage 1 (image)": layout.PLOTS / "train_stage1_loss.csv",
             "Stage 2 (video)": layout.PLOTS / "train_stage2_loss.csv"}
VIDEO_ONLY = ("stage1",)  # its image model is the Stage 1 export, scored under "finetuned"
# compared in "gain": higher is better for all of them
GAIN_KEYS = ("segm_AP", "segm_AP50", "bbox_AP", "J", "F", "J&F", "vis_mAP")
VIDEO_GAIN_KEYS = ("J", "F", "J&F", "vis_mAP")
# (key in metrics/evaluate.json, after, before): what each step of the pipeline changed
GAINS = (("gain", "finetuned", "baseline"), ("gain_stage1", "stage1", "baseline"),
         ("gain_stage2", "finetuned", "stage1"))

DEFAULTS: dict[str, Any] = {
    "max_images": 0,
    "max_videos": 0,
    "max_detections": 100,
    "min_score": 0.05,
    "overlay_min_score": 0.5,
    "num_overlays": 3,
    "gif_frames": 16,
    "device": None,        # None: model.device
    "cpu_threads": 1,      # torch threads on CPU (0 = torch default)
    "vis": True,
    "vis_keyframe_stride": 8,
    "vis_min_score": 0.5,
    "vis_max_tracks": 20,
    "bootstrap_samples": 1000,         # J / F / J&F intervals: videos resampled with replacement (0 = none)
    "bootstrap_samples_images": 200,   # segm AP interval: images resampled (pycocotools accumulate per resample)
    "bootstrap_seed": 0,
    "mlflow": True,
}


def check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Fill defaults and check types, naming ``evaluate.<key>`` in errors."""
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise UserError(f"unknown key 'evaluate.{unknown[0]}' (known: {', '.join(DEFAULTS)})", "params.yaml")
    merged = {**DEFAULTS, **params}
    for key in ("max_images", "max_videos", "max_detections", "num_overlays", "gif_frames", "vis_keyframe_stride",
                "vis_max_tracks", "cpu_threads", "bootstrap_samples", "bootstrap_samples_images", "bootstrap_seed"):
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UserError(f"'evaluate.{key}' must be an integer >= 0, got {value!r}", "params.yaml")
    for key in ("max_detections", "gif_frames", "vis_keyframe_stride", "vis_max_tracks"):
        if merged[key] < 1:
            raise UserError(f"'evaluate.{key}' must be >= 1", "params.yaml")
    for key in ("vis", "mlflow"):
        if not isinstance(merged[key], bool):
            raise UserError(f"'evaluate.{key}' must be true or false, got {merged[key]!r}", "params.yaml")
    for key in ("min_score", "overlay_min_score", "vis_min_score"):
        value = merged[key]
        if key == "vis_min_score" and value == "auto":
            continue  # calibrated on the validation split (factory_sam3.inference.vis)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise UserError(f"'evaluate.{key}' must be a number in [0, 1]{' or auto' * (key == 'vis_min_score')}, "
                            f"got {value!r}", "params.yaml")
    if merged["device"] is not None and not isinstance(merged["device"], str):
        raise UserError(f"'evaluate.device' must be auto, cpu, cuda or null, got {merged['device']!r}", "params.yaml")
    return merged


def settings_for(params: Mapping[str, Any], label: str, pictures_dir: Path | None) -> EvalSettings:
    return EvalSettings(max_images=params["max_images"], max_videos=params["max_videos"],
                        max_detections=params["max_detections"], min_score=float(params["min_score"]),
                        overlay_min_score=float(params["overlay_min_score"]), num_overlays=params["num_overlays"],
                        gif_frames=params["gif_frames"], pictures_dir=pictures_dir, label=label,
                        vis=params["vis"], vis_keyframe_stride=params["vis_keyframe_stride"],
                        vis_min_score=None if params["vis_min_score"] == "auto" else float(params["vis_min_score"]),
                        vis_max_tracks=params["vis_max_tracks"],
                        bootstrap_samples=params["bootstrap_samples"],
                        bootstrap_samples_images=params["bootstrap_samples_images"],
                        bootstrap_seed=params["bootstrap_seed"])


def evaluate_models(models: Mapping[str, Any], params: Mapping[str, Any],
                    coco_dir: Path, ytvis_dir: Path, pictures_dir: Path | None) -> dict[str, Any]:
    """Score each ``label -> (predict_image, track)`` on the COCO and YTVIS test splits (labels in
    :data:`VIDEO_ONLY` on the video split only).

    A value may also be a function returning that pair: it is called when the label's turn comes, so
    only one model pair is in memory at a time (four full-size SAM3 models would not need to coexist).
    Returns {"metrics": {label: flat metrics}, "details": {label: per-class / counts}, "pictures": [...],
    "reference": {...}, and the GAINS keys for the labels present}.
    """
    out: dict[str, Any] = {"metrics": {}, "details": {}, "pictures": []}
    per_video: dict[str, Any] = {}
    for label, entry in models.items():
        predict_image, track = entry() if callable(entry) else entry
        settings = settings_for(params, label, pictures_dir)
        images = ({"metrics": {"segm_AP_per_class": {}}, "pictures": []} if label in VIDEO_ONLY
                  else evaluate_images(predict_image, coco_dir, settings))
        videos = evaluate_videos(track, ytvis_dir, settings)
        per_video[label] = videos["per_video"]
        vis = evaluate_vis(predict_image, track, ytvis_dir, settings) if settings.vis else {"metrics": {}}
        flat = {k: v for k, v in {**images["metrics"], **videos["metrics"], **vis["metrics"]}.items()
                if not isinstance(v, dict)}
        # per-class AP as flat keys, so `dvc exp show` can put them in columns too
        flat.update({f"segm_AP_{name}": ap for name, ap in images["metrics"]["segm_AP_per_class"].items()})
        out["metrics"][label] = flat
        out["details"][label] = {"segm_AP_per_class": images["metrics"]["segm_AP_per_class"],
                                 "per_video": {str(v): objects for v, objects in videos["per_video"].items()}}
        out["pictures"] += images["pictures"] + videos["pictures"]
        del predict_image, track  # free this pair's models before the next is built
        _release_memory()
    # J&F of two model-free references put the models' numbers in context: copying the prompt forward
    # (does the tracker follow motion?) and predicting nothing (credit from frames where objects are absent)
    reference_settings = settings_for(params, "reference", None)
    out["reference"] = {}
    for name, tracker in (("copy_prompt", copy_prompt_tracker), ("empty", empty_tracker)):
        scores = evaluate_videos(tracker, ytvis_dir, reference_settings)["metrics"]
        out["reference"].update({f"{name}_{k}": scores.get(k) for k in ("J", "F", "J&F", "J&F_ci95")})
        out["reference"].update({k: scores[k] for k in ("videos", "objects", "frames")})
    for key, after, before in GAINS:
        if after in out["metrics"] and before in out["metrics"]:
            tuned, base = out["metrics"][after], out["metrics"][before]
            keys = GAIN_KEYS if key == "gain" else VIDEO_GAIN_KEYS
            out[key] = {k: tuned[k] - base[k] for k in keys
                        if isinstance(base.get(k), (int, float)) and isinstance(tuned.get(k), (int, float))}
            out[key].update(metric_code.bootstrap_gain_ci(per_video[before], per_video[after],
                                                          params["bootstrap_samples"], params["bootstrap_seed"]))
    return out


def _release_memory() -> None:
    import gc

    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 5)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round(v) for v in value]
    return value


def run(all_params: Mapping[str, Any], coco_root: Path = layout.COCO, ytvis_root: Path = layout.YTVIS,
        stage1_dir: Path = layout.MODELS / "stage1", stage2_dir: Path = layout.MODELS / "stage2",
        metrics_file: Path = METRICS_FILE, pictures_dir: Path = PICTURES_DIR, details_file: Path = DETAILS_FILE,
        model_pairs: Mapping[str, Any] | None = None,
        log_mlflow: bool | None = None, loss_csvs: Mapping[str, Path] = LOSS_CSVS) -> dict[str, Any]:
    """Run the stage. ``model_pairs`` replaces the real models (tests); otherwise they are loaded from
    ``model``/``train_stage2`` params and the Stage 1/2 outputs."""
    params = check_params(all_params.get("evaluate") or {})
    model_params = dict(all_params.get("model") or {})
    coco_dir = Path(coco_root) / "test"
    ytvis_dir = Path(ytvis_root) / "test"
    for path in (coco_dir, ytvis_dir):
        if not path.is_dir():
            raise UserError("test split not found (run the data stages: `dvc repro validate`)", path)

    import torch

    from factory_sam3.evaluation.models import device_name, load_pair, resolve_device

    device = resolve_device(params["device"] or model_params.get("device"))
    if device == "cpu" and params["cpu_threads"]:
        # oversubscribed threads on a shared machine are several times slower (measured by Stage 2)
        torch.set_num_threads(params["cpu_threads"])
    profile = model_params.get("profile", "tiny")
    sources: dict[str, Any] = {}
    if model_pairs is None:
        # fail before minutes of baseline evaluation if the fine-tuned models are missing
        for path, stage in ((Path(stage1_dir), "train_stage1"), (Path(stage2_dir), "train_stage2")):
            if not path.exists():
                raise UserError(f"not found (run `dvc repro {stage}`)", path)
        video_seed = int((all_params.get("train_stage2") or {}).get("seed", 0) or 0)

        def loader(label: str) -> Callable[[], tuple[Callable, Callable]]:
            def load() -> tuple[Callable, Callable]:
                pair = load_pair(label, model_params, device, Path(stage1_dir), Path(stage2_dir), video_seed,
                                 float(params["min_score"]))
                sources[label] = pair.source
                return pair.predict_image, pair.track
            return load

        model_pairs = {label: loader(label) for label in LABELS}

    with atomic_dir(pictures_dir) as tmp_pictures, torch.inference_mode():
        result = evaluate_models(model_pairs, params, coco_dir, ytvis_dir, tmp_pictures)
        curves = loss_curves(loss_csvs, tmp_pictures / "loss_curves.png")
        pictures = [str(Path(pictures_dir) / Path(p).name) for p in result["pictures"]]
        if curves is not None:
            pictures.append(str(Path(pictures_dir) / curves.name))

    metrics = {label: _round(values) for label, values in result["metrics"].items()}
    for key, _, _ in GAINS:
        if key in result or key == "gain":
            metrics[key] = _round(result.get(key, {}))
    metrics["reference"] = _round(result["reference"])
    metrics["device"] = device_name(device)
    metrics["profile"] = profile
    metrics["bootstrap"] = {"samples_videos": params["bootstrap_samples"],
                            "samples_images": params["bootstrap_samples_images"], "seed": params["bootstrap_seed"],
                            "level": 0.95, "resampled": "videos for J/F/J&F (gains paired), images for segm AP"}
    write_json(metrics_file, metrics)
    write_json(details_file, _round({"details": result["details"], "sources": sources, "settings": params,
                                     "pictures": pictures}))

    if log_mlflow if log_mlflow is not None else params["mlflow"]:
        _log_to_mlflow(all_params, metrics, [metrics_file, details_file, *pictures])
    return metrics


def _log_to_mlflow(all_params: Mapping[str, Any], metrics: Mapping[str, Any], artifacts: list) -> None:
    from factory_sam3.tracking import stage_run

    flat = {}
    for label in (*LABELS, *(key for key, _, _ in GAINS), "reference"):
        for key, value in (metrics.get(label) or {}).items():
            name = f"{label}.{key}".replace("&", "_and_")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                flat[name] = value
            elif isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
                flat[f"{name}_lo"], flat[f"{name}_hi"] = value  # a confidence interval
    params = {"model": all_params.get("model") or {}, "evaluate": all_params.get("evaluate") or {}}
    with stage_run("evaluate", params=params, tags={"device": metrics.get("device", "")}) as run:
        run.log_metrics(flat)
        for path in artifacts:
            path = Path(path)
            if path.is_file():
                run.log_artifact(path, artifact_path="pictures" if path.suffix in (".png", ".gif") else None)
