"""``python -m factory_sam3.predict``: run the fine-tuned model on a plant's own images and videos.

Images: the detector finds every instance of each class name (text prompt). Videos: SAM3's own scheme,
``factory_sam3.inference.vis`` — the loop ``evaluate`` scores — the detector finds objects by text on
keyframes, the tracker follows them with memory between keyframes, detections are matched to tracks so an
object keeps its id, new objects start tracks, lost ones end.

Writes into one output folder (a temporary folder renamed into place when everything succeeded):
overlays (``overlay.mp4`` / ``overlay/*.png`` for a video, ``overlays/<image>.png`` for images) and the
masks as YouTube-VIS results (``ytvis_results.json`` + ``ytvis_videos.json``) or COCO results
(``coco_results.json`` + ``coco_images.json``), compressed RLE; ``summary.json`` with frames/s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from factory_sam3.errors import UserError
from factory_sam3.formats.rle import mask_to_rle
from factory_sam3.io import atomic_dir
from factory_sam3.predict import inputs as inputs_module
from factory_sam3.predict import outputs as out

SAM3_WEIGHTS = "sam3"  # --model value for the released SAM3 weights
DETECTION_FLOOR = 0.05  # detections kept for calibration and COCO results (as evaluate.min_score)
FALLBACK_THRESHOLD = 0.5  # SAM3's own default, when there is nothing to calibrate on


@dataclass
class LoadedModel:
    detector: Any  # a Sam3Image for factory_sam3.models.predict_image
    tracker: Any | None  # online.ModelTracker, or None (an image model)
    categories: list[dict] | None  # [{"id", "name"}] the model was trained on; None: open vocabulary
    description: str


def _stage1_categories(folder: Path) -> list[dict] | None:
    info = folder / "stage1.json"
    if not info.is_file():
        return None
    try:
        return json.loads(info.read_text()).get("categories") or None
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read ({err})", info) from None


def load_model(spec: str, device: str, checkpoint: str | None = None) -> LoadedModel:
    """``models/stage2`` (detector + tracker), ``models/stage1`` (images only) or ``sam3`` (the released
    weights, ``checkpoint``: a local .pt or the gated hub id ``facebook/sam3``)."""
    from factory_sam3.inference.online import ModelTracker
    from factory_sam3.models import sam3_compat
    from factory_sam3.models import video as video_models

    sam3_compat.apply()  # sam3 0.1.4 pins memory and assumes CUDA in places (no-op with CUDA)
    if spec == SAM3_WEIGHTS:
        from factory_sam3.models import build_image_model

        checkpoint = checkpoint or "facebook/sam3"
        # as evaluate's sam3 baseline: the image model detects, the video model's tracker follows
        detector = build_image_model("sam3", checkpoint=checkpoint, device=device, train=False)
        video_model = video_models.build_video_model("sam3", seed=None)
        video_models.init_from_checkpoints(video_model, None, checkpoint)
        return LoadedModel(
            detector, ModelTracker(video_model.to(device).eval()), None, f"released SAM3 weights ({checkpoint})"
        )
    folder = Path(spec)
    if not folder.is_dir():
        raise UserError(
            "model folder not found (run `dvc repro`, or pass --model models/stage2, models/stage1 or sam3)", folder
        )
    if (folder / "stage1.json").is_file():
        from factory_sam3.models import load_stage1

        model = load_stage1(folder, device=device)
        return LoadedModel(model, None, list(model.categories) or None, f"Stage 1 image model ({folder})")
    if (folder / video_models.STAGE2_WEIGHTS).is_file():
        model = video_models.load_stage2(folder, device=device)
        model.detector.resolution_px = model.image_size
        config = (
            json.loads((folder / video_models.STAGE2_CONFIG).read_text())
            if (folder / video_models.STAGE2_CONFIG).is_file()
            else {}
        )
        # Stage 2 starts from models/stage1 and keeps its detector: the classes are Stage 1's
        categories = config.get("categories") or _stage1_categories(folder.parent / "stage1")
        return LoadedModel(model.detector, ModelTracker(model), categories, f"Stage 2 video model ({folder})")
    raise UserError(
        "not a model folder: expected stage1.json + model.pt (models/stage1) or model.pt + config.json (models/stage2)",
        folder,
    )


def choose_classes(model: LoadedModel, requested: Sequence[str] | None) -> list[dict]:
    """The text prompts as ``[{"id", "name"}]``: the model's categories by default; a requested name the
    fine-tuned model was not trained on is an error (the released weights take any text)."""
    known = model.categories
    if not requested:
        if not known:
            raise UserError(
                "this model records no class names: pass --classes, e.g. --classes screw defect", model.description
            )
        return sorted(({"id": int(c["id"]), "name": c["name"]} for c in known), key=lambda c: c["id"])
    names = list(dict.fromkeys(n.strip() for n in requested if n.strip()))
    if not names:
        raise UserError("--classes is empty")
    if known is None:
        return [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    by_name = {c["name"]: int(c["id"]) for c in known}
    for name in names:
        if name not in by_name:
            raise UserError(f"unknown class '{name}' (the model knows: {', '.join(by_name)})", model.description)
    return [{"id": by_name[n], "name": n} for n in names]


def detector_fn(model: LoadedModel, floor: float) -> Callable:
    """``detect(image, class_names)`` keeping detections scoring above ``floor`` (evaluate's adapter)."""
    from factory_sam3.evaluation.models import image_predictor

    return image_predictor(model.detector, floor)


def pick_threshold(
    requested: str, detect: Callable, class_names: list[str], calibration_split: Path
) -> tuple[float, str]:
    """A number, or ``auto``: the best detection F1 on the validation split (evaluate's calibration)."""
    if requested != "auto":
        try:
            value = float(requested)
        except ValueError:
            value = -1.0
        if not 0 <= value <= 1:
            raise UserError(f"--score-threshold must be a number in [0, 1] or auto, got {requested!r}")
        return value, "given"
    from factory_sam3.inference import vis

    calibration = vis.calibrate_on_split(detect, calibration_split, class_names)
    if calibration.min_score is None:
        return FALLBACK_THRESHOLD, f"SAM3's default: {calibration.reason}"
    return calibration.min_score, (
        f"calibrated on {calibration_split}: detection F1 {calibration.f1:.2f}, {calibration.frames} frames"
    )


def predict_images(
    source, model: LoadedModel, classes: list[dict], threshold: float, out_dir: Path, progress: bool = True
) -> dict:
    detect = detector_fn(model, threshold)
    names = [c["name"] for c in classes]
    name_to_id = {c["name"]: c["id"] for c in classes}
    class_colour = {c["name"]: out.colour(i) for i, c in enumerate(classes)}
    (out_dir / "overlays").mkdir()
    images, results = [], []
    for image_id, path in enumerate(tqdm(source.files, unit="image", disable=not progress), start=1):
        image = inputs_module.read_image(path)
        detections = [d for d in detect(image, names) if d["score"] >= threshold]
        images.append({"id": image_id, "file_name": path.name, "width": image.shape[1], "height": image.shape[0]})
        for det in detections:
            box = det.get("box")
            rle = mask_to_rle(det["mask"])
            results.append(
                {
                    "image_id": image_id,
                    "category_id": name_to_id[det["category"]],
                    "score": round(float(det["score"]), 5),
                    "segmentation": rle,
                    "bbox": _xywh(box) if box is not None else _mask_xywh(det["mask"]),
                }
            )
        drawn = out.draw_labelled(
            image,
            [
                {"mask": d["mask"], "colour": class_colour[d["category"]], "label": f"{d['category']} {d['score']:.2f}"}
                for d in detections
            ],
        )
        _write_png(out_dir / "overlays" / f"{path.stem}.png", drawn)
    out.write_json(out_dir / out.COCO_RESULTS, results)
    out.write_json(out_dir / out.COCO_IMAGES, {"images": images, "categories": classes})
    return {
        "frames": len(images),
        "detections": len(results),
        "files": ["overlays/", out.COCO_RESULTS, out.COCO_IMAGES],
    }


def predict_video(
    source,
    model: LoadedModel,
    classes: list[dict],
    threshold: float,
    out_dir: Path,
    keyframe_stride: int,
    max_tracks: int,
    overlay_format: str,
    progress: bool = True,
) -> dict:
    from factory_sam3.inference import vis

    detect = detector_fn(model, threshold)
    names = [c["name"] for c in classes]
    settings = vis.VisSettings(keyframe_stride=keyframe_stride, min_score=threshold, max_tracks=max_tracks)
    writer = out.OverlayWriter(out_dir, overlay_format, source.fps, source.width, source.height)
    collector = vis.MaskletCollector()
    session = model.tracker.session(source.num_frames)
    try:
        stream = tqdm(inputs_module.frames(source), total=source.num_frames, unit="frame", disable=not progress)
        for result in vis.segment_video(stream, detect, session, names, settings):
            collector.add(result)
            writer.write(out.draw_labelled(result.frame, out.track_instances(result.masks, result.tracks)))
    finally:
        writer.close()
    name_to_id = {c["name"]: c["id"] for c in classes}
    masklets = collector.masklets(1, name_to_id)
    if source.files:
        file_names = [str(p.relative_to(source.path)) for p in source.files]
    else:
        file_names = [f"{source.name}/{t:05d}.jpg" for t in range(collector.frames)]
    video = {
        "id": 1,
        "file_names": file_names,
        "length": collector.frames,
        "width": source.width,
        "height": source.height,
        "source": str(source.path),
        "fps": source.fps,
    }
    out.write_json(out_dir / out.YTVIS_RESULTS, masklets)
    out.write_json(out_dir / out.YTVIS_VIDEOS, {"videos": [video], "categories": classes})
    overlay = out.OVERLAY_DIR + "/" if overlay_format == "png" else out.OVERLAY_VIDEO
    return {
        "frames": collector.frames,
        "tracks": len(masklets),
        "files": [overlay, out.YTVIS_RESULTS, out.YTVIS_VIDEOS],
    }


def run(
    input_path: str,
    output: str | None,
    model_spec: str,
    classes: Sequence[str] | None,
    score_threshold: str,
    device: str,
    kind: str = "auto",
    keyframe_stride: int = 8,
    max_tracks: int = 20,
    overlay_format: str = "mp4",
    checkpoint: str | None = None,
    calibration_split: str = "data/ytvis/valid",
    progress: bool = True,
) -> dict:
    """Everything the CLI does; returns the summary (also written to ``summary.json``)."""
    from factory_sam3.device import device_name, resolve_device

    source = inputs_module.open_source(input_path, kind)
    out_dir = Path(output) if output else Path("predictions") / source.name
    if out_dir.resolve() == source.path.resolve() or source.path.resolve() in out_dir.resolve().parents:
        raise UserError("the output folder must not be the input or inside it", out_dir)
    if out_dir.exists() and not (out_dir / out.SUMMARY).is_file() and any(out_dir.iterdir()):
        # the output folder is replaced as a whole: never someone's folder that predict did not write
        raise UserError("exists and is not a predict output (no summary.json): choose another --output", out_dir)
    _check_writable(out_dir)
    try:
        device = resolve_device(device)
    except UserError as err:
        raise UserError(err.problem.replace("evaluate.device", "--device"), "--device") from None
    import torch

    model = load_model(model_spec, device, checkpoint)
    if source.kind == "video" and model.tracker is None:
        raise UserError(
            f"{model.description} is an image model without a tracker: use models/stage2 for videos", source.path
        )
    chosen = choose_classes(model, classes)
    names = [c["name"] for c in chosen]
    with torch.inference_mode():
        threshold, why = pick_threshold(
            score_threshold, detector_fn(model, DETECTION_FLOOR), names, Path(calibration_split)
        )
        try:
            with atomic_dir(out_dir) as tmp:
                start = time.perf_counter()
                if source.kind == "video":
                    summary = predict_video(
                        source, model, chosen, threshold, tmp, keyframe_stride, max_tracks, overlay_format, progress
                    )
                else:
                    summary = predict_images(source, model, chosen, threshold, tmp, progress)
                seconds = time.perf_counter() - start
                summary.update(
                    {
                        "input": str(source.path),
                        "kind": source.kind,
                        "model": model.description,
                        "classes": names,
                        "score_threshold": threshold,
                        "score_threshold_from": why,
                        # end to end: decoding, model, drawing and writing (model loading excluded)
                        "device": device_name(device),
                        "seconds": round(seconds, 3),
                        "frames_per_s": round(summary["frames"] / seconds, 3) if seconds > 0 else None,
                    }
                )
                out.write_json(tmp / out.SUMMARY, summary, compact=False)
        except OSError as err:  # permissions, a full disk, a file in the way
            raise UserError(f"cannot write the output ({err.strerror or err})", out_dir) from None
    summary["output"] = str(out_dir)
    return summary


def _check_writable(out_dir: Path) -> None:
    """Fail before loading a model when the output folder cannot be created."""
    import os

    parent = out_dir.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"cannot create the output folder: {parent} is a file", out_dir)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"the output folder is not writable (no write permission on {parent})", out_dir)


def _xywh(box) -> list[float]:
    return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]


def _mask_xywh(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def _write_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(rgb).save(path)
