"""Text-prompted video instance segmentation: SAM3's detect-then-track scheme, one frame at a time.

The one implementation ``evaluate`` (YTVIS mAP) and ``predict`` (a user's video) both run:

1. every frame, the tracker propagates each live track with its memory (``TrackerSession.propagate``);
2. on every ``keyframe_stride``-th frame the detector is prompted with each class name; detections below
   ``min_score`` are dropped, and of two detections of one object (IoU >= ``match_iou``, e.g. found by two
   prompts) only the higher-scoring one is kept;
3. each detection is matched to the live track of its class whose mask on this frame overlaps it most
   (IoU >= ``match_iou``, greedy by score): the object keeps its id, and (``recondition``) the detection's
   mask becomes a new conditioning frame of the track, as SAM3 re-anchors matched masklets on fresh
   detections;
4. a detection that matches no track and overlaps no tracked object starts a new track (at most
   ``max_tracks`` per video); a track that no detection matched on ``max_missed`` keyframes in a row is
   lost and ends.

A track's class is the prompt that found it, its score the mean score of the detections matched to it.
Frames are never held: the caller streams them in and gets one ``FrameResult`` per frame back, so memory
stays bounded on long videos (the tracker itself keeps a bounded memory bank, see ``online``).

The detector is ``detect(image, class_names) -> [{"category", "score", "mask"}, ...]`` (evaluate's
``PredictImage``); the tracker is anything ``tracker_session`` adapts: a Stage 2 model tracker with an
online ``session()`` (``online.ModelTracker``), or a plain ``track(frames, prompts)`` function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from factory_sam3.evaluation.metrics import region_similarity
from factory_sam3.formats.rle import mask_to_rle

Detect = Callable[[np.ndarray, Sequence[str]], Sequence[Mapping[str, Any]]]


@dataclass(frozen=True)
class VisSettings:
    keyframe_stride: int = 8  # the detector runs on every N-th frame (frame 0 included)
    min_score: float = 0.5  # detections below are ignored
    max_tracks: int = 20  # tracks started per video
    match_iou: float = 0.5  # mask IoU that makes a detection the same object as a track
    max_missed: int = 2  # keyframes in a row without a matching detection before a track ends
    recondition: bool = True  # matched detections re-anchor their track (new conditioning frame)


@dataclass
class Track:
    id: int
    category: str
    start: int  # frame the track was started on
    scores: list[float] = field(default_factory=list)
    end: int | None = None  # first frame the track no longer covers (None: live)
    missed: int = 0  # keyframes in a row without a matching detection

    @property
    def score(self) -> float:
        return float(np.mean(self.scores))


@dataclass
class FrameResult:
    index: int
    frame: np.ndarray  # the input frame (RGB), for overlays; not kept by the loop
    masks: dict[int, np.ndarray]  # live track id -> HxW bool mask on this frame
    tracks: Mapping[int, Track]  # every track so far (live and ended)


class TrackerSession(Protocol):
    """A tracker followed frame by frame. ``propagate`` takes the next frame and returns the masks of the
    prompted objects on it; ``prompt`` (re)anchors an object on the current frame with a mask and returns the
    mask the tracker holds for it there; ``end`` forgets an object."""

    def propagate(self, frame: np.ndarray) -> dict[Any, np.ndarray]: ...

    def prompt(self, obj: Any, mask: np.ndarray) -> np.ndarray: ...

    def end(self, obj: Any) -> None: ...


class FunctionTrackerSession:
    """A ``track(frames, prompts) -> {obj: [mask or None per frame]}`` function driven frame by frame.

    For trackers given as plain functions (the fakes of the evaluate tests): it keeps the frames seen and
    reruns the function on all of them each frame, so it is quadratic in time and not memory-bounded;
    the Stage 2 model has a real online session (``online.OnlineTracker``)."""

    def __init__(self, track: Callable):
        self.track = track
        self.frames: list[np.ndarray] = []
        self.prompts: dict[Any, tuple[int, np.ndarray]] = {}

    def _masks_now(self, objects) -> dict[Any, np.ndarray]:
        h, w = self.frames[-1].shape[:2]
        out = self.track(self.frames, {o: self.prompts[o] for o in objects})
        return {o: np.zeros((h, w), bool) if out[o][-1] is None else np.asarray(out[o][-1], bool) for o in objects}

    def propagate(self, frame: np.ndarray) -> dict[Any, np.ndarray]:
        self.frames.append(frame)
        return self._masks_now(list(self.prompts)) if self.prompts else {}

    def prompt(self, obj: Any, mask: np.ndarray) -> np.ndarray:
        self.prompts[obj] = (len(self.frames) - 1, np.asarray(mask, bool))
        return self._masks_now([obj])[obj]

    def end(self, obj: Any) -> None:
        self.prompts.pop(obj, None)


def tracker_session(track: Any, num_frames: int | None = None) -> TrackerSession:
    """The session of a tracker: its own (``track.session(num_frames)``) or a function's adapter."""
    if hasattr(track, "session"):
        return track.session(num_frames)
    return FunctionTrackerSession(track)


def keyframe_detections(
    detect: Detect, frame: np.ndarray, class_names: Sequence[str], settings: VisSettings
) -> list[dict]:
    """The detector's objects on one frame: above ``min_score``, non-empty, one per object (best score)."""
    found = []
    for det in detect(frame, list(class_names)):
        score = float(det["score"])
        mask = np.asarray(det["mask"], dtype=bool)
        if score >= settings.min_score and mask.any():
            found.append({"category": det["category"], "score": score, "mask": mask})
    found.sort(key=lambda d: -d["score"])
    kept: list[dict] = []
    for det in found:
        if all(region_similarity(det["mask"], k["mask"]) < settings.match_iou for k in kept):
            kept.append(det)
    return kept


def segment_video(
    frames: Iterable[np.ndarray],
    detect: Detect,
    session: TrackerSession,
    class_names: Sequence[str],
    settings: VisSettings = VisSettings(),
) -> Iterator[FrameResult]:
    """Detect by text on keyframes, track in between; yields one ``FrameResult`` per input frame."""
    stride = max(1, int(settings.keyframe_stride))
    tracks: dict[int, Track] = {}
    live: list[int] = []
    for t, frame in enumerate(frames):
        propagated = session.propagate(frame)
        masks = {obj: np.asarray(propagated[obj], bool) for obj in live}
        if t % stride == 0:
            detections = keyframe_detections(detect, frame, class_names, settings)
            matched: set[int] = set()
            unmatched = []
            for det in detections:
                candidates = [
                    (region_similarity(det["mask"], masks[obj]), obj)
                    for obj in live
                    if obj not in matched and tracks[obj].category == det["category"]
                ]
                best_iou, best = max(candidates, default=(0.0, None), key=lambda c: c[0])
                if best is not None and best_iou >= settings.match_iou:
                    matched.add(best)
                    tracks[best].scores.append(det["score"])
                    tracks[best].missed = 0
                    if settings.recondition:
                        masks[best] = np.asarray(session.prompt(best, det["mask"]), bool)
                else:
                    unmatched.append(det)
            for obj in [o for o in live if o not in matched]:
                tracks[obj].missed += 1
                if tracks[obj].missed >= settings.max_missed:  # lost: the track ends here
                    tracks[obj].end = t
                    live.remove(obj)
                    masks.pop(obj)
                    session.end(obj)
            for det in unmatched:
                if len(tracks) >= settings.max_tracks:
                    break
                if any(region_similarity(det["mask"], m) >= settings.match_iou for m in masks.values()):
                    continue  # an object already tracked here (under another class or unmatched)
                obj = len(tracks) + 1
                tracks[obj] = Track(obj, det["category"], t, [det["score"]])
                live.append(obj)
                masks[obj] = np.asarray(session.prompt(obj, det["mask"]), bool)
        yield FrameResult(t, frame, masks, tracks)


class MaskletCollector:
    """Turns the frame results of one video into YTVIS results (compressed RLE, ``None`` where a track has
    no mask), the format sam3's YTVIS evaluator and ``evaluate`` score."""

    def __init__(self):
        self.segmentations: dict[int, list] = {}
        self.tracks: Mapping[int, Track] = {}
        self.frames = 0

    def add(self, result: FrameResult) -> None:
        self.tracks = result.tracks
        for obj in result.tracks:
            segs = self.segmentations.setdefault(obj, [None] * result.index)
            mask = result.masks.get(obj)
            segs.append(mask_to_rle(mask) if mask is not None and mask.any() else None)
        self.frames = result.index + 1

    def masklets(self, video_id: int, category_ids: Mapping[str, int]) -> list[dict]:
        from pycocotools import mask as mask_util

        out = []
        for obj, track in sorted(self.tracks.items()):
            segs = self.segmentations[obj] + [None] * (self.frames - len(self.segmentations[obj]))
            out.append(
                {
                    # YouTube-VIS names the video "video_id"; sam3's evaluator (videos as COCO images) "image_id"
                    "video_id": int(video_id),
                    "image_id": int(video_id),
                    "category_id": int(category_ids[track.category]),
                    "score": track.score,
                    "segmentations": segs,
                    "bboxes": [None if s is None else [float(v) for v in mask_util.toBbox(_coco_rle(s))] for s in segs],
                    "areas": [None if s is None else int(mask_util.area(_coco_rle(s))) for s in segs],
                    "track_id": obj,
                    "start": track.start,
                    "end": track.end,
                }
            )
        return out


def _coco_rle(rle: Mapping) -> dict:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


# ---------------------------------------------------------------------------------------------- calibration


@dataclass
class Calibration:
    """The detection threshold picked on the validation split (``None`` with ``reason`` when none works)."""

    min_score: float | None
    reason: str
    f1: float = 0.0
    precision: float = 0.0
    recall: float = 0.0
    frames: int = 0


def calibrate_min_score(
    detect: Detect,
    samples: Iterable[tuple[np.ndarray, Sequence[tuple[str, np.ndarray]]]],
    class_names: Sequence[str],
    match_iou: float = 0.5,
) -> Calibration:
    """The score threshold that maximises detection F1 (mask IoU >= ``match_iou``, same class) on
    ``samples`` of ``(frame, [(class name, ground-truth mask), ...])`` — the threshold at which a
    detection is worth starting a track for. ``None`` when no detection matches any object."""
    scored: list[tuple[float, bool]] = []
    num_gt = frames = 0
    for frame, objects in samples:
        frames += 1
        num_gt += len(objects)
        dets = sorted(detect(frame, list(class_names)), key=lambda d: -float(d["score"]))
        taken: set[int] = set()
        for det in dets:
            mask = np.asarray(det["mask"], bool)
            if not mask.any():
                continue  # an empty mask finds nothing (and would match an empty one at IoU 1)
            best, best_iou = None, match_iou
            for i, (name, gt) in enumerate(objects):
                if i not in taken and name == det["category"]:
                    iou = region_similarity(mask, gt)
                    if iou >= best_iou:
                        best, best_iou = i, iou
            if best is not None:
                taken.add(best)
            scored.append((float(det["score"]), best is not None))
    if not frames:
        return Calibration(None, "no annotated validation frame to calibrate on")
    if not num_gt:
        return Calibration(None, f"no object in the {frames} validation frames")
    scored.sort(key=lambda s: -s[0])
    best = Calibration(
        None, f"no detection matches an object (mask IoU >= {match_iou:g}) in {frames} validation frames", frames=frames
    )
    tp = fp = 0
    for i, (score, hit) in enumerate(scored):
        tp, fp = tp + hit, fp + (not hit)
        if i + 1 < len(scored) and scored[i + 1][0] == score:
            continue  # a threshold keeps every detection of equal score
        f1 = 2 * tp / (2 * tp + fp + (num_gt - tp))
        if tp and f1 > best.f1:
            best = Calibration(
                score, f"best detection F1 on {frames} validation frames", f1, tp / (tp + fp), tp / num_gt, frames
            )
    return best


def validation_samples(split_dir: str | Path, max_frames: int = 64):
    """``(frame, [(class name, mask), ...])`` of up to ``max_frames`` annotated frames of a YTVIS split,
    spread evenly over its videos (a frame counts as annotated when some track has a segmentation there)."""
    from PIL import Image

    from factory_sam3.errors import UserError
    from factory_sam3.formats import ytvis as ytvis_format
    from factory_sam3.formats.rle import SegmentationError, rle_to_mask, to_rle
    from factory_sam3.layout import YTVIS_ANNOTATIONS

    split_dir = Path(split_dir)
    ann_file = split_dir / YTVIS_ANNOTATIONS
    data = ytvis_format.read(ann_file)
    names = {c["id"]: c["name"] for c in data["categories"]}
    by_video: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_video.setdefault(ann["video_id"], []).append(ann)
    annotated = [
        (video, t)
        for video in sorted(data["videos"], key=lambda v: v["id"])
        for t in range(len(video["file_names"]))
        if any(t < len(a["segmentations"]) and a["segmentations"][t] is not None for a in by_video.get(video["id"], []))
    ]
    if len(annotated) > max_frames:
        annotated = [annotated[i] for i in np.linspace(0, len(annotated) - 1, max_frames).round().astype(int)]
    for video, t in annotated:
        h, w = int(video["height"]), int(video["width"])
        objects = []
        for a in by_video[video["id"]]:
            seg = a["segmentations"][t] if t < len(a["segmentations"]) else None
            if seg is None:
                continue
            try:
                mask = rle_to_mask(to_rle(seg, h, w)).astype(bool)
            except SegmentationError as err:
                raise UserError(str(err), ann_file, f"video {video['id']} annotation {a['id']}") from None
            if mask.any():
                objects.append((names[a["category_id"]], mask))
        path = split_dir / video["file_names"][t]
        try:
            with Image.open(path) as image:
                frame = np.asarray(image.convert("RGB"))
        except (OSError, ValueError) as err:
            raise UserError(f"cannot read image {path}: {err}", ann_file, f"video {video['id']}") from None
        yield frame, objects


def calibrate_on_split(
    detect: Detect, split_dir: str | Path, class_names: Sequence[str], max_frames: int = 64
) -> Calibration:
    """``calibrate_min_score`` on up to ``max_frames`` annotated frames of a YTVIS split (``data/ytvis/valid``)."""
    from factory_sam3.layout import YTVIS_ANNOTATIONS

    split_dir = Path(split_dir)
    if not (split_dir / YTVIS_ANNOTATIONS).is_file():
        return Calibration(None, f"no validation split to calibrate the detection threshold on ({split_dir})")
    return calibrate_min_score(detect, validation_samples(split_dir, max_frames), class_names)
