"""evaluate: did fine-tuning help, in images and in video, and how fast does the result run?

Scores the starting weights (`baseline`: the profile's un-fine-tuned models), Stage 1 in video
(`stage1`: the Stage 1 detector with the starting tracker) and the fine-tuned models (`finetuned`:
models/stage1 for images, models/stage2 for video) on the test splits:
  images  data/coco/test   text prompts = category names; COCO segm/bbox AP, AP50, AP75, per-class AP
  video   data/ytvis/test  each object prompted with its first visible ground-truth mask and tracked;
                           J, F, J&F (DAVIS 2017: annotated frames after the prompt but the
                           last, true negatives included, objects pooled); and text-prompted video
                           instance segmentation (image model finds objects by class name on
                           keyframes, tracker follows them) scored with YTVIS mAP (sam3's evaluator)
                           on annotated frames only
  spread  95% bootstrap intervals: over videos (J, F, J&F, paired for gains), over images (segm AP)
  speed   images/s and frames/s of the model calls, with the device named
Logs all of it to MLflow (run name `evaluate`, params `evaluate.<key>` and `model.<key>`, tagged with the
pipeline run like the training stages). Settings: the `evaluate` and `model` sections of params.yaml.

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

import argparse
import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from factory_sam3 import config, layout
from factory_sam3.config import PARAMS_FILE, Invalid, ModelParams, device_problem
from factory_sam3.config import load as load_params
from factory_sam3.data import parallel
from factory_sam3.errors import UserError, cli_entry
from factory_sam3.evaluation import metrics as metric_code
from factory_sam3.evaluation.models import LABELS
from factory_sam3.evaluation.pictures import loss_curves
from factory_sam3.evaluation.runner import (
    EvalSettings,
    copy_prompt_tracker,
    empty_tracker,
    evaluate_images,
    evaluate_videos,
    evaluate_vis,
)
from factory_sam3.io import atomic_dir, write_json

METRICS_FILE = layout.metrics_file("evaluate")
PICTURES_DIR = layout.EVALUATE_PICTURES
DETAILS_FILE = layout.EVALUATE_DETAILS
LOSS_CSVS = {
    "Stage 1 (image)": layout.loss_plot("train_stage1"),
    "Stage 2 (video)": layout.loss_plot("train_stage2"),
}
VIDEO_ONLY = ("stage1",)  # its image model is the Stage 1 export, scored under "finetuned"
# compared in "gain": higher is better for all of them
GAIN_KEYS = ("segm_AP", "segm_AP50", "bbox_AP", "J", "F", "J&F", "J_present", "empty_when_absent", "vis_mAP")
VIDEO_GAIN_KEYS = ("J", "F", "J&F", "J_present", "empty_when_absent", "vis_mAP")
# (key in metrics/evaluate.json, after, before): what each step of the pipeline changed
GAINS = (
    ("gain", "finetuned", "baseline"),
    ("gain_stage1", "stage1", "baseline"),
    ("gain_stage2", "finetuned", "stage1"),
)


@dataclass(frozen=True)
class EvaluateParams:
    """The `evaluate` section of params.yaml (values and comments there; no defaults here)."""

    max_images: int
    max_videos: int
    max_detections: int
    min_score: float
    overlay_min_score: float
    num_overlays: int
    gif_frames: int
    vis: bool
    vis_keyframe_stride: int
    vis_min_score: Literal["auto"] | float  # auto: calibrated on the validation split (factory_sam3.inference.vis)
    vis_max_tracks: int
    device: str | None  # None: model.device
    cpu_threads: int
    workers: int
    bootstrap_samples: int
    bootstrap_samples_images: int
    bootstrap_seed: int
    mlflow: bool

    def check(self) -> None:
        for key in (
            "max_images",
            "max_videos",
            "num_overlays",
            "cpu_threads",
            "workers",
            "bootstrap_samples",
            "bootstrap_samples_images",
            "bootstrap_seed",
        ):
            if getattr(self, key) < 0:
                raise Invalid(key, f"must be an integer >= 0, got {getattr(self, key)!r}")
        for key in ("max_detections", "gif_frames", "vis_keyframe_stride", "vis_max_tracks"):
            if getattr(self, key) < 1:
                raise Invalid(key, f"must be an integer >= 1, got {getattr(self, key)!r}")
        for key in ("min_score", "overlay_min_score", "vis_min_score"):
            value = getattr(self, key)
            if value != "auto" and not 0 <= value <= 1:
                raise Invalid(key, f"must be a number in [0, 1]{' or auto' * (key == 'vis_min_score')}, got {value!r}")
        problem = None if self.device is None else device_problem(self.device)
        if problem:
            raise Invalid("device", f"{problem}; null = model.device")


def evaluate_params(section: Mapping[str, Any], params_file: str | os.PathLike = PARAMS_FILE) -> dict[str, Any]:
    """The `evaluate` section typed and checked, as the plain mapping the stage and its pool workers pass around."""
    return dataclasses.asdict(config.from_mapping(EvaluateParams, section, "evaluate", params_file))


def settings_for(params: Mapping[str, Any], label: str, pictures_dir: Path | None) -> EvalSettings:
    return EvalSettings(
        max_images=params["max_images"],
        max_videos=params["max_videos"],
        max_detections=params["max_detections"],
        min_score=float(params["min_score"]),
        overlay_min_score=float(params["overlay_min_score"]),
        num_overlays=params["num_overlays"],
        gif_frames=params["gif_frames"],
        pictures_dir=pictures_dir,
        label=label,
        vis=params["vis"],
        vis_keyframe_stride=params["vis_keyframe_stride"],
        vis_min_score=None if params["vis_min_score"] == "auto" else float(params["vis_min_score"]),
        vis_max_tracks=params["vis_max_tracks"],
        bootstrap_samples=params["bootstrap_samples"],
        bootstrap_samples_images=params["bootstrap_samples_images"],
        bootstrap_seed=params["bootstrap_seed"],
    )


# The parts of one model's evaluation, longest first (the pool hands them out in this order): each is
# independent of the others, so they can run in separate processes.
PARTS = ("vis", "videos", "images")


def _tasks(labels, params: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [
        (label, part)
        for part in PARTS
        for label in labels
        if not (part == "images" and label in VIDEO_ONLY) and not (part == "vis" and not params["vis"])
    ]


def score_part(
    pair: tuple[Callable, Callable],
    label: str,
    part: str,
    params: Mapping[str, Any],
    coco_dir: Path,
    ytvis_dir: Path,
    pictures_dir: Path | None,
    progress: bool = True,
) -> dict[str, Any]:
    """One part of a model's evaluation: ``images`` (COCO AP), ``videos`` (J/F) or ``vis`` (YTVIS mAP)."""
    predict_image, track = pair
    settings = dataclasses.replace(settings_for(params, label, pictures_dir), progress=progress)
    if part == "images":
        return evaluate_images(predict_image, coco_dir, settings)
    if part == "videos":
        return evaluate_videos(track, ytvis_dir, settings)
    vis = evaluate_vis(predict_image, track, ytvis_dir, settings)
    return {"metrics": vis["metrics"]}  # the masklets stay here: they are scored already


def _combine(parts: Mapping[str, Mapping[str, Any]]) -> tuple[dict, dict, list, dict]:
    """A label's flat metrics, details, pictures and per-video scores from its parts."""
    images = parts.get("images") or {"metrics": {"segm_AP_per_class": {}}, "pictures": []}
    videos, vis = parts["videos"], parts.get("vis") or {"metrics": {}}
    flat = {
        k: v for k, v in {**images["metrics"], **videos["metrics"], **vis["metrics"]}.items() if not isinstance(v, dict)
    }
    # per-class AP as flat keys, so `dvc exp show` can put them in columns too
    flat.update({f"segm_AP_{name}": ap for name, ap in images["metrics"]["segm_AP_per_class"].items()})
    details = {
        "segm_AP_per_class": images["metrics"]["segm_AP_per_class"],
        "per_video": {str(v): objects for v, objects in videos["per_video"].items()},
    }
    return flat, details, images["pictures"] + videos["pictures"], videos["per_video"]


def evaluate_models(
    models: Mapping[str, Any],
    params: Mapping[str, Any],
    coco_dir: Path,
    ytvis_dir: Path,
    pictures_dir: Path | None,
    scored: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Score each ``label -> (predict_image, track)`` on the COCO and YTVIS test splits (labels in
    :data:`VIDEO_ONLY` on the video split only).

    A value may also be a function returning that pair: it is called when the label's turn comes, so
    only one model pair is in memory at a time (four full-size SAM3 models would not need to coexist).
    ``scored`` (label -> part -> result of :func:`score_part`) holds parts already computed elsewhere (the
    process pool of :func:`score_in_pool`); those labels are not run again.
    Returns {"metrics": {label: flat metrics}, "details": {label: per-class / counts}, "pictures": [...],
    "reference": {...}, and the GAINS keys for the labels present}.
    """
    out: dict[str, Any] = {"metrics": {}, "details": {}, "pictures": []}
    per_video: dict[str, Any] = {}
    for label, entry in models.items():
        if scored is not None and label in scored:
            parts = scored[label]
        else:
            pair = entry() if callable(entry) else entry
            parts = {
                part: score_part(pair, label, part, params, coco_dir, ytvis_dir, pictures_dir)
                for _, part in _tasks([label], params)
            }
            del pair  # free this pair's models before the next is built
            _release_memory()
        flat, details, pictures, per_video[label] = _combine(parts)
        out["metrics"][label], out["details"][label] = flat, details
        out["pictures"] += pictures
    # J&F of two model-free references put the models' numbers in context: copying the prompt forward
    # (does the tracker follow motion?) and predicting nothing (credit from frames where objects are absent)
    reference_settings = settings_for(params, "reference", None)
    out["reference"] = {}
    for name, tracker in (("copy_prompt", copy_prompt_tracker), ("empty", empty_tracker)):
        scores = evaluate_videos(tracker, ytvis_dir, reference_settings)["metrics"]
        out["reference"].update(
            {f"{name}_{k}": scores.get(k) for k in ("J", "F", "J&F", "J&F_ci95", "J_present", "empty_when_absent")}
        )
        out["reference"].update(
            {k: scores[k] for k in ("videos", "objects", "frames", "present_frames", "absent_frames")}
        )
    for key, after, before in GAINS:
        if after in out["metrics"] and before in out["metrics"]:
            tuned, base = out["metrics"][after], out["metrics"][before]
            keys = GAIN_KEYS if key == "gain" else VIDEO_GAIN_KEYS
            out[key] = {
                k: tuned[k] - base[k]
                for k in keys
                if isinstance(base.get(k), (int, float)) and isinstance(tuned.get(k), (int, float))
            }
            out[key].update(
                metric_code.bootstrap_gain_ci(
                    per_video[before], per_video[after], params["bootstrap_samples"], params["bootstrap_seed"]
                )
            )
    return out


def score_in_pool(
    labels,
    load_args: Mapping[str, Any],
    params: Mapping[str, Any],
    coco_dir: Path,
    ytvis_dir: Path,
    pictures_dir: Path | None,
    workers: int,
) -> tuple[dict, dict]:
    """Every (label, part) of :func:`_tasks` in a pool of ``workers`` processes; each loads the models of
    the label it is given (``load_pair(label, **load_args)``: about a second for the tiny profile) and keeps
    them for its next part of the same label. The results equal the sequential run's: each part is
    deterministic and independent of the others. Returns (label -> part -> result, label -> model sources)."""
    tasks = _tasks(labels, params)
    scored: dict[str, dict] = {label: {} for label in labels}
    sources: dict[str, Any] = {}
    jobs = [(label, part, dict(load_args), dict(params), coco_dir, ytvis_dir, pictures_dir) for label, part in tasks]
    initializer = functools.partial(_init_pool_worker, int(params["cpu_threads"]))
    with parallel.process_pool(min(workers, len(jobs)), initializer, preload=(__name__, "torch")) as pool:
        # chunksize 1: the parts are handed out in order, longest first
        for done, (label, part, result, source, seconds) in enumerate(pool.imap_unordered(_pool_task, jobs), 1):
            scored[label][part] = result
            sources[label] = source
            print(f"evaluate: {label} {part} scored in {seconds:.0f} s ({done}/{len(jobs)})", flush=True)
    return scored, sources


_worker_models: dict[str, Any] = {}  # a pool worker's current label and its loaded ModelPair


def _init_pool_worker(cpu_threads: int) -> None:
    import torch

    if cpu_threads:
        torch.set_num_threads(cpu_threads)


def _pool_task(job) -> tuple[str, str, dict, dict, float]:
    label, part, load_args, params, coco_dir, ytvis_dir, pictures_dir = job
    import torch

    from factory_sam3.evaluation.models import load_pair

    start = time.perf_counter()
    if _worker_models.get("label") != label:
        _worker_models.clear()
        _release_memory()
        _worker_models.update(label=label, pair=load_pair(label, **load_args))
    pair = _worker_models["pair"]
    with torch.inference_mode():
        result = score_part(
            (pair.predict_image, pair.track), label, part, params, coco_dir, ytvis_dir, pictures_dir, progress=False
        )  # the parent prints a line per finished part
    return label, part, result, pair.source, time.perf_counter() - start


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


def run(
    all_params: Mapping[str, Any],
    coco_root: Path = layout.COCO,
    ytvis_root: Path = layout.YTVIS,
    stage1_dir: Path = layout.STAGE1_MODEL,
    stage2_dir: Path = layout.STAGE2_MODEL,
    metrics_file: Path = METRICS_FILE,
    pictures_dir: Path = PICTURES_DIR,
    details_file: Path = DETAILS_FILE,
    model_pairs: Mapping[str, Any] | None = None,
    log_mlflow: bool | None = None,
    loss_csvs: Mapping[str, Path] = LOSS_CSVS,
    params_file: str | os.PathLike = PARAMS_FILE,
) -> dict[str, Any]:
    """Run the stage. ``model_pairs`` replaces the real models (tests); otherwise they are loaded from
    ``model``/``train_stage2`` params and the Stage 1/2 outputs."""
    params = evaluate_params(config.section_of(all_params, "evaluate", params_file), params_file)
    model_params = dataclasses.asdict(config.typed_section(all_params, "model", ModelParams, params_file))
    coco_dir = Path(coco_root) / "test"
    ytvis_dir = Path(ytvis_root) / "test"
    for path in (coco_dir, ytvis_dir):
        if not path.is_dir():
            raise UserError("test split not found (run the data stages: `dvc repro validate`)", path)

    import torch

    from factory_sam3.device import device_name, resolve_device
    from factory_sam3.evaluation.models import load_pair

    device = (
        resolve_device(params["device"], "evaluate.device", params_file)
        if params["device"]
        else resolve_device(model_params.get("device"), "model.device", params_file)
    )
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
                pair = load_pair(
                    label,
                    model_params,
                    device,
                    Path(stage1_dir),
                    Path(stage2_dir),
                    video_seed,
                    float(params["min_score"]),
                )
                sources[label] = pair.source
                return pair.predict_image, pair.track

            return load

        model_pairs = {label: loader(label) for label in LABELS}
        load_args = {
            "model_params": model_params,
            "device": device,
            "stage1_dir": Path(stage1_dir),
            "stage2_dir": Path(stage2_dir),
            "video_seed": video_seed,
            "min_score": float(params["min_score"]),
        }
        # on CPU the models' parts run side by side, one process per core (each single-threaded); one GPU
        # runs them one after another in this process
        workers = parallel.resolve_workers(params["workers"]) if device == "cpu" else 1
    else:
        workers = 1

    with atomic_dir(pictures_dir) as tmp_pictures, torch.inference_mode():
        scored = None
        if workers > 1:
            scored, pool_sources = score_in_pool(LABELS, load_args, params, coco_dir, ytvis_dir, tmp_pictures, workers)
            sources.update(pool_sources)
        result = evaluate_models(model_pairs, params, coco_dir, ytvis_dir, tmp_pictures, scored=scored)
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
    metrics["bootstrap"] = {
        "samples_videos": params["bootstrap_samples"],
        "samples_images": params["bootstrap_samples_images"],
        "seed": params["bootstrap_seed"],
        "level": 0.95,
        "resampled": "videos for J/F/J&F (gains paired), images for segm AP",
    }
    write_json(metrics_file, metrics)
    write_json(
        details_file,
        _round({"details": result["details"], "sources": sources, "settings": params, "pictures": pictures}),
    )

    if log_mlflow if log_mlflow is not None else params["mlflow"]:
        _log_to_mlflow({"evaluate": params, "model": model_params}, metrics, [metrics_file, details_file, *pictures])
    return metrics


def _log_to_mlflow(params: Mapping[str, Any], metrics: Mapping[str, Any], artifacts: list) -> None:
    """``params``: the typed sections, logged as ``evaluate.<key>`` and ``model.<key>`` like every stage's."""
    from factory_sam3.tracking import stage_run

    flat = {}
    for label in (*LABELS, *(key for key, _, _ in GAINS), "reference"):
        for key, value in (metrics.get(label) or {}).items():
            name = f"{label}.{key}".replace("&", "_and_")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                flat[name] = value
            elif isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
                flat[f"{name}_lo"], flat[f"{name}_hi"] = value  # a confidence interval
    with stage_run("evaluate", params=params, tags={"device": metrics.get("device", "")}) as run:
        run.log_metrics(flat)
        for path in artifacts:
            path = Path(path)
            if path.is_file():
                run.log_artifact(path, artifact_path="pictures" if path.suffix in (".png", ".gif") else None)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: %(default)s)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    args = parser.parse_args(argv)

    all_params = load_params(args.params)
    show(run(all_params, log_mlflow=False if args.no_mlflow else None, params_file=args.params))


def show(metrics: Mapping[str, Any]) -> None:
    """The table printed at the end of the stage: each model, the gain and its interval, the n, the references."""
    rows = (
        "segm_AP",
        "bbox_AP",
        "J",
        "F",
        "J&F",
        "J_present",
        "empty_when_absent",
        "vis_mAP",
        "images_per_s",
        "frames_per_s",
    )
    labels = [label for label in ("baseline", "stage1", "finetuned") if label in metrics]
    print(f"device: {metrics['device']}   profile: {metrics['profile']}")
    print(f"{'':18s}" + "".join(f"{label:>12s}" for label in labels) + f"{'gain':>10s}   gain 95% CI")
    for key in rows:
        values = [metrics[label].get(key) for label in labels] + [metrics["gain"].get(key)]
        ci = metrics["gain"].get(f"{key}_ci95")
        print(
            f"{key:18s}"
            + "".join(f"{'-' if v is None else f'{v:.4f}':>{w}s}" for v, w in zip(values, [12] * len(labels) + [10]))
            + (f"   [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        )
    finetuned = metrics.get("finetuned", {})
    print(
        f"n: {finetuned.get('images')} images ({finetuned.get('instances')} instances); {finetuned.get('videos')} "
        f"videos, {finetuned.get('objects')} objects, {finetuned.get('frames')} object-frames (J/F: "
        f"{finetuned.get('present_frames')} with the object present, {finetuned.get('absent_frames')} without)"
    )
    for label in labels:
        ci = metrics[label].get("J&F_ci95")
        if ci:
            print(f"{label} J&F 95% CI (bootstrap over videos): [{ci[0]:.3f}, {ci[1]:.3f}]")
    reference = metrics.get("reference", {})
    print(
        f"reference J&F without a model: prompt copied forward {reference.get('copy_prompt_J&F') or 0:.4f}, "
        f"empty masks {reference.get('empty_J&F') or 0:.4f}"
    )
    gain = metrics.get("gain", {})
    better = [k for k in ("segm_AP", "J&F") if (gain.get(k) or 0) > 0]
    worse = [k for k in ("segm_AP", "J&F") if k in gain and k not in better]
    if worse:
        print(
            f"note: the fine-tuned model does not beat the baseline on {', '.join(worse)} "
            "(train longer or check the training stages' loss curves in reports/evaluate/loss_curves.png)"
        )
    print(f"wrote {METRICS_FILE}")
