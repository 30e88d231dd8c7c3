"""Stage 2 data: YTVIS videos -> training clips.

``load_ytvis(split_dir)`` reads ``<split>/annotations.json`` (videos with ``file_names``; per-track
``segmentations`` in compressed or uncompressed RLE or polygons, ``null`` where the object is absent or the
frame is not annotated). A frame counts as *annotated* when any track has a segmentation on it (or when the
video lists it in an optional ``annotated_frames``); on an annotated frame a ``null`` track means "absent",
on other frames nothing is known. Sparse keyframes are therefore fine: clips are sampled along the annotated
frames, so every clip frame is supervised.

``ClipSampler.sample(rng)`` draws a clip SAM2-style: a video, ``frames_per_clip`` CONSECUTIVE annotated frames (SAM
2's default; with probability ``stride_prob`` a stride in ``[stride_min, stride_max]`` annotated frames instead, the
guide's range as an augmentation for larger motion), random time reversal, a first frame on which at least one
object is visible, and at most ``max_objects`` of the objects visible there. ``ClipAugment`` applies one random
transform (flip, scale-crop, colour jitter) identically to every frame of the clip, and ``collate_clip`` returns a
``ClipBatch`` that keeps the object <-> frame bookkeeping (which object is which track, which clip frame is which
video frame, where each object is present).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from factory_sam3.errors import UserError
from factory_sam3.formats import ytvis
from factory_sam3.formats.rle import SegmentationError, rle_to_mask, to_rle
from factory_sam3.models.video import IMAGE_MEAN, IMAGE_STD


@dataclass
class Track:
    track_id: int
    category_id: int
    segmentations: list  # per frame: segmentation (RLE dict / polygons) or None


@dataclass
class Video:
    video_id: int
    name: str
    root: Path
    file_names: list[str]
    height: int
    width: int
    tracks: list[Track]
    annotated: list[int]  # indices of annotated frames (time order)
    source: Path = field(default=Path("annotations.json"))

    def visible(self, frame: int) -> list[int]:
        """Indices (into ``tracks``) of the objects with a mask on ``frame``."""
        return [i for i, t in enumerate(self.tracks) if t.segmentations[frame] is not None]

    def mask(self, track_index: int, frame: int) -> np.ndarray:
        """The HxW bool mask of a track on a frame (all False where absent)."""
        return _decode(self, track_index, frame)

    def image(self, frame: int) -> np.ndarray:
        return read_rgb(self.root / self.file_names[frame])


def read_rgb(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError("cannot read image (missing or not an image)", path)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _decode(video: Video, track_index: int, frame: int) -> np.ndarray:
    seg = video.tracks[track_index].segmentations[frame]
    if seg is None:
        return np.zeros((video.height, video.width), dtype=bool)
    try:
        return rle_to_mask(to_rle(seg, video.height, video.width)).astype(bool)
    except SegmentationError as err:
        raise UserError(
            str(err), video.source, f"video {video.name} track {video.tracks[track_index].track_id} frame {frame}"
        ) from None


def load_ytvis(split_dir: str | os.PathLike) -> list[Video]:
    """Read and check ``<split_dir>/annotations.json``; every problem names the file and the record."""
    split_dir = Path(split_dir)
    path = split_dir / "annotations.json"
    data = ytvis.read(path)
    videos: dict[int, Video] = {}
    for i, rec in enumerate(data["videos"]):
        where = f"videos[{i}]"
        if not isinstance(rec, dict):
            raise UserError("video record must be an object", path, where)
        names = rec.get("file_names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise UserError("'file_names' must be a non-empty list of paths", path, where)
        for key in ("id", "width", "height"):
            if isinstance(rec.get(key), bool) or not isinstance(rec.get(key), int) or rec[key] < 0:
                raise UserError(f"'{key}' must be a non-negative integer", path, where)
        if "length" in rec and rec["length"] != len(names):
            raise UserError(f"'length' is {rec['length']} but there are {len(names)} file_names", path, where)
        name = Path(names[0]).parent.as_posix() or str(rec["id"])
        videos[rec["id"]] = Video(rec["id"], name, split_dir, names, rec["height"], rec["width"], [], [], path)
        extra = rec.get("annotated_frames")
        if extra is not None:
            videos[rec["id"]].annotated = sorted({int(f) for f in extra if 0 <= int(f) < len(names)})
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        if not isinstance(ann, dict):
            raise UserError("annotation must be an object", path, where)
        video = videos.get(ann.get("video_id"))
        if video is None:
            raise UserError(f"unknown video_id {ann.get('video_id')!r}", path, where)
        segs = ann.get("segmentations")
        if not isinstance(segs, list) or len(segs) != len(video.file_names):
            raise UserError(f"'segmentations' must have one entry per frame ({len(video.file_names)})", path, where)
        for f, seg in enumerate(segs):
            if seg is not None and not isinstance(seg, (dict, list)):
                raise UserError(f"frame {f}: segmentation must be an RLE, polygons or null", path, where)
        video.tracks.append(Track(int(ann.get("id", i)), int(ann.get("category_id", 0)), segs))
    result = []
    for video in videos.values():
        annotated = set(video.annotated)
        for track in video.tracks:
            annotated.update(f for f, s in enumerate(track.segmentations) if s is not None)
        video.annotated = sorted(annotated)
        result.append(video)
    return result


@dataclass
class Clip:
    video: Video
    frames: list[int]  # video frame indices, in clip (processing) order
    objects: list[int]  # indices into video.tracks
    reversed: bool = False


@dataclass
class ClipSampler:
    videos: list[Video]
    frames_per_clip: int = 4
    stride_min: int = 1
    stride_max: int = 5
    reverse_prob: float = 0.5
    max_objects: int = 3
    stride_prob: float = 0.2  # share of clips with a stride from [stride_min, stride_max]; the rest stride 1
    exit_prob: float = 0.0  # share of clips that start where one of their objects leaves the view within the clip

    def __post_init__(self):
        self.usable = [v for v in self.videos if len(v.annotated) >= 2 and any(v.visible(f) for f in v.annotated)]

    def sample(self, rng: np.random.Generator) -> Clip:
        if not self.usable:
            raise UserError("no video has two annotated frames with a visible object; Stage 2 needs video tracks")
        video = self.usable[int(rng.integers(len(self.usable)))]
        timeline = list(video.annotated)
        reverse = bool(rng.random() < self.reverse_prob)
        if reverse:
            timeline = timeline[::-1]
        n = min(self.frames_per_clip, len(timeline))
        # consecutive annotated frames unless this clip is one of the strided (larger-motion) augmentations
        strided = bool(rng.random() < self.stride_prob)
        stride = int(rng.integers(self.stride_min, self.stride_max + 1)) if strided else 1
        while stride > 1 and (n - 1) * stride >= len(timeline):
            stride -= 1
        last_start = len(timeline) - 1 - (n - 1) * stride
        starts = [s for s in range(last_start + 1) if video.visible(timeline[s])]
        if not starts:  # objects only near the end of this direction: start wherever one is visible
            starts = [s for s in range(len(timeline) - 1) if video.visible(timeline[s])]
            n = min(n, len(timeline) - starts[0])
            stride = 1
        exits = bool(self.exit_prob) and rng.random() < self.exit_prob
        if exits:
            # objects leave the belt in every test video, but a short clip of consecutive frames rarely shows it:
            # without such clips the tracker learns to always find its object (and latches onto a look-alike)
            with_exit = [s for s in starts if _leaving(video, _window(timeline, s, n, stride))]
            exits = bool(with_exit)
            starts = with_exit or starts
        start = starts[int(rng.integers(len(starts)))]
        frames = _window(timeline, start, n, stride)
        objects = video.visible(frames[0])
        if exits:  # the leaving objects first, the rest at random
            keep = _leaving(video, frames)[: self.max_objects]
            rest = [o for o in objects if o not in keep]
            if len(objects) > self.max_objects:
                extra = self.max_objects - len(keep)
                objects = sorted(keep + (rng.choice(rest, extra, replace=False).tolist() if extra else []))
        elif len(objects) > self.max_objects:
            objects = sorted(rng.choice(objects, self.max_objects, replace=False).tolist())
        return Clip(video, frames, objects, reverse)


def _window(timeline: list[int], start: int, n: int, stride: int) -> list[int]:
    return [timeline[min(start + k * stride, len(timeline) - 1)] for k in range(n)]


def _leaving(video: Video, frames: list[int]) -> list[int]:
    """Objects visible on a clip's first frame and absent from one of its later frames."""
    later = [set(video.visible(f)) for f in frames[1:]]
    return [o for o in video.visible(frames[0]) if any(o not in seen for seen in later)]


@dataclass
class ClipBatch:
    """One clip, ready for the model. ``images`` ``[T, 3, S, S]`` normalised; ``masks`` ``[T, B, 1, S, S]`` bool;
    ``present`` ``[T, B]`` bool; ``supervised`` ``[T]`` bool. ``track_ids[b]`` is object ``b``'s YTVIS annotation
    id, ``frame_indices[t]`` clip frame ``t``'s index in the video."""

    images: torch.Tensor
    masks: torch.Tensor
    present: torch.Tensor
    supervised: torch.Tensor
    track_ids: list[int]
    frame_indices: list[int]
    video: str

    def to(self, device) -> ClipBatch:
        return ClipBatch(
            self.images.to(device),
            self.masks.to(device),
            self.present.to(device),
            self.supervised.to(device),
            self.track_ids,
            self.frame_indices,
            self.video,
        )


@dataclass
class ClipAugment:
    """One random transform for the whole clip (so motion is preserved): horizontal flip, a scale-crop and
    brightness/contrast/saturation jitter, all with the same parameters on every frame."""

    hflip_prob: float = 0.5
    min_crop: float = 0.8
    jitter: float = 0.2
    enabled: bool = True

    def params(self, rng: np.random.Generator) -> dict:
        if not self.enabled:
            return {"flip": False, "crop": (0.0, 0.0, 1.0, 1.0), "brightness": 1.0, "contrast": 1.0, "saturation": 1.0}
        scale = float(rng.uniform(self.min_crop, 1.0))
        x0, y0 = float(rng.uniform(0, 1 - scale)), float(rng.uniform(0, 1 - scale))
        j = self.jitter
        return {
            "flip": bool(rng.random() < self.hflip_prob),
            "crop": (x0, y0, x0 + scale, y0 + scale),
            "brightness": float(rng.uniform(1 - j, 1 + j)),
            "contrast": float(rng.uniform(1 - j, 1 + j)),
            "saturation": float(rng.uniform(1 - j, 1 + j)),
        }


def _crop_resize(x: torch.Tensor, crop, size: int, mode: str) -> torch.Tensor:
    """``[N, C, H, W]`` -> crop (fractions) -> ``[N, C, size, size]``."""
    H, W = x.shape[-2:]
    x0, y0, x1, y1 = crop
    top, left = int(round(y0 * H)), int(round(x0 * W))
    bottom, right = max(int(round(y1 * H)), top + 1), max(int(round(x1 * W)), left + 1)
    x = x[..., top:bottom, left:right]
    kwargs = {"align_corners": False, "antialias": True} if mode == "bilinear" else {}
    return F.interpolate(x, size=(size, size), mode=mode, **kwargs)


def collate_clip(
    clip: Clip, size: int, augment: ClipAugment | None = None, rng: np.random.Generator | None = None
) -> ClipBatch:
    video = clip.video
    p = (augment or ClipAugment(enabled=False)).params(rng or np.random.default_rng(0))
    images = torch.stack([torch.from_numpy(video.image(f)).permute(2, 0, 1) for f in clip.frames]).float() / 255.0
    masks = torch.stack(
        [torch.from_numpy(np.stack([video.mask(o, f) for o in clip.objects])) for f in clip.frames]
    ).float()  # [T, B, H, W]
    images = _crop_resize(images, p["crop"], size, "bilinear")
    masks = _crop_resize(masks, p["crop"], size, "nearest") > 0.5
    if p["flip"]:
        images, masks = images.flip(-1), masks.flip(-1)
    gray = images.mean(dim=1, keepdim=True)
    images = images * p["brightness"]
    images = (images - images.mean(dim=(1, 2, 3), keepdim=True)) * p["contrast"] + images.mean(
        dim=(1, 2, 3), keepdim=True
    )
    images = gray + (images - gray) * p["saturation"]
    images = images.clamp(0, 1)
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    images = (images - mean) / std
    present = masks.flatten(2).any(-1)
    supervised = torch.tensor([f in set(video.annotated) for f in clip.frames])
    return ClipBatch(
        images=images,
        masks=masks[:, :, None],
        present=present,
        supervised=supervised,
        track_ids=[video.tracks[o].track_id for o in clip.objects],
        frame_indices=list(clip.frames),
        video=video.name,
    )
