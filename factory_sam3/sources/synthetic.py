"""The embedded default dataset: a deterministic, offline, synthetic factory work cell seen by a plant camera.

A camera at 10 fps looks down on a conveyor belt with two lanes. Parts (green hexagons, most with a dark
scratch or spot = defect) and screws (silver discs with a slot) ride the lanes from left to right at 2-4 px
per frame, a fraction of a part's size (a real line at 10 fps, not a fast-forward). Same-class instances are
look-alikes (same shape and colour, small variations) and often sit side by side: in the other lane at the
same height, or close behind each other in one lane. One or two robot grippers (orange claws on grey arms)
move over the belt at a similar speed, occluding what is below them. Some videos show the line running empty
for a while (no part on the belt, grippers parked above the view): those frames are the negatives. Lighting
changes slowly (a lamp drifting), flickers, and differs per camera; the sensor adds noise.

Sizes are chosen for the model's default input (tiny profile: 224 x 224 with 14-px patches, so one feature
cell is 16 x 12 px of a 256 x 192 frame): parts and grippers span 2-4 feature cells, screws and defects about
one (the hard cases).

Every object is drawn into a label map at the same time as into the picture, in depth order, so the
per-frame masks are exactly the VISIBLE pixels of each instance (what the gripper covers is removed from the
part below it) and track ids stay stable through a video. Keyframe-only videos (``sparse_videos``) are
annotated on every ``keyframe_interval``-th frame only.

Determinism: every random draw comes from ``numpy.random.default_rng([seed, kind, index])``, pixel maths is
integer or IEEE multiply/add (no vectorised transcendental functions, whose last bit can vary by CPU), JSON
keys are sorted and nothing records a time, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from factory_sam3 import layout
from factory_sam3.config import Invalid
from factory_sam3.errors import UserError
from factory_sam3.formats.rle import mask_to_rle
from factory_sam3.io import write_json

# BGR colours (OpenCV order)
PART_GREEN = (60, 165, 70)
PART_RING = (110, 205, 120)
DEFECT_DARK = (22, 24, 34)
SCREW_SILVER = (205, 205, 212)
SCREW_SLOT = (90, 90, 95)
GRIPPER_ORANGE = (20, 135, 250)
GRIPPER_TIP = (10, 90, 190)
ARM_GREY = (128, 124, 120)

SPEED_MIN, SPEED_MAX = 2.0, 4.0  # belt speed, px per frame (10 fps): a part moves ~1/10 of its size
GRIPPER_MAX_SPEED = 4.0  # px per frame, horizontal and vertical, at the fastest point of its path
PART_RADIUS = (22.0, 26.0)  # hexagon: 38-52 px across = 2.4-3.3 feature cells at 224 px / 14-px patches
SCREW_RADIUS = (8.0, 10.0)  # 16-20 px across: about one feature cell (a hard case)
LANES = (0.27, 0.73)  # lane centres as a share of the belt's height
LANE_JITTER = 4.0  # px a belt item sits off its lane centre
GAP = (20.0, 150.0)  # free belt between neighbours in a lane, px
CLOSE_GAP = (2.0, 8.0)  # ... for a look-alike right behind its twin
CLOSE_CHANCE = 0.3
CLASS_MIX = ("part_A", "screw")  # belt items, drawn from a shuffled bag; with DEFECT_CHANCE keeps classes balanced
DEFECT_CHANCE = 0.85
IDLE_SHARE = 0.5  # in an "idle line" video this share of the frames shows an empty belt (the negatives)
MIN_VISIBLE_PIXELS = 12  # slivers smaller than this at the frame edge are not annotated
JPEG_QUALITY = 95


@dataclass(frozen=True)
class SyntheticParams:
    """params.yaml ``fetch.synthetic`` (what each key means: the comments there)."""

    num_videos: int
    frames_per_video: int
    fps: float
    width: int
    height: int
    num_images: int
    negative_fraction: float
    sparse_videos: int
    keyframe_interval: int

    def check(self) -> None:
        for key in (
            "num_videos",
            "frames_per_video",
            "width",
            "height",
            "num_images",
            "sparse_videos",
            "keyframe_interval",
        ):
            if getattr(self, key) < 0:
                raise Invalid(key, f"must be a non-negative integer, got {getattr(self, key)!r}")
        if self.width < 96 or self.height < 96 or self.width % 2 or self.height % 2:
            raise Invalid("width", f"and height must be even and at least 96, got {self.width}x{self.height}")
        if self.frames_per_video < 8:
            raise Invalid("frames_per_video", f"must be at least 8, got {self.frames_per_video}")
        if self.keyframe_interval < 1:
            raise Invalid("keyframe_interval", f"must be at least 1, got {self.keyframe_interval}")
        if self.sparse_videos > self.num_videos:
            raise Invalid("sparse_videos", f"cannot exceed num_videos ({self.sparse_videos} > {self.num_videos})")
        if not 0 <= self.negative_fraction <= 0.5:
            raise Invalid("negative_fraction", f"must be between 0 and 0.5, got {self.negative_fraction!r}")
        if self.fps <= 0:
            raise Invalid("fps", f"must be a positive number, got {self.fps!r}")


KIND_VIDEO, KIND_IMAGE = 1, 2


# --------------------------------------------------------------------------------------------- objects


@dataclass
class Defect:
    track: int
    dx: float  # offset from the part centre
    dy: float
    shape: str  # "scratch" | "spot"
    length: float
    width: float
    angle: float

    def polygon(self, cx: float, cy: float) -> np.ndarray:
        x, y = cx + self.dx, cy + self.dy
        if self.shape == "spot":
            pts = cv2.ellipse2Poly(
                (round(x), round(y)), (round(self.length / 2), round(self.width / 2)), round(self.angle), 0, 360, 20
            )
            return pts.astype(np.int32)
        c, s = math.cos(math.radians(self.angle)), math.sin(math.radians(self.angle))
        hl, hw = self.length / 2, self.width / 2
        corners = [(-hl, -hw), (hl, -hw * 0.4), (hl, hw * 0.4), (-hl, hw)]  # tapering scratch
        return np.array([[round(x + u * c - v * s), round(y + u * s + v * c)] for u, v in corners], np.int32)


@dataclass
class BeltItem:
    """A part or a screw riding the belt: x(t) = s + speed * t (s: its place on the belt)."""

    track: int
    category: str  # "part_A" | "screw"
    s: float
    y: float
    radius: float
    angle: float
    shade: tuple[int, int, int]  # small per-instance colour offset: look-alikes, not clones
    defect: Defect | None = None
    _corners: np.ndarray | None = None  # hexagon corners relative to the centre, computed once

    def draw(self, img: np.ndarray, label: np.ndarray, x: float) -> None:
        if self.category == "part_A":
            if self._corners is None:
                self._corners = np.array(
                    [
                        [
                            self.radius * math.cos(math.radians(self.angle + 60 * k)),
                            self.radius * math.sin(math.radians(self.angle + 60 * k)),
                        ]
                        for k in range(6)
                    ],
                    np.float64,
                )
            pts = np.round(self._corners + np.array([x, self.y])).astype(np.int32)
            cv2.fillPoly(img, [pts], _shaded(PART_GREEN, self.shade))
            cv2.fillPoly(label, [pts], self.track)
            cv2.circle(img, (round(x), round(self.y)), round(self.radius * 0.4), _shaded(PART_RING, self.shade), 2)
            if self.defect is not None:
                poly = self.defect.polygon(x, self.y)
                cv2.fillPoly(img, [poly], DEFECT_DARK)
                cv2.fillPoly(label, [poly], self.defect.track)
        else:
            centre, r = (round(x), round(self.y)), round(self.radius)
            cv2.circle(img, centre, r, _shaded(SCREW_SILVER, self.shade), -1)
            cv2.circle(label, centre, r, self.track, -1)
            c, s = math.cos(math.radians(self.angle)), math.sin(math.radians(self.angle))
            d = r - 2
            cv2.line(
                img, (round(x - d * c), round(self.y - d * s)), (round(x + d * c), round(self.y + d * s)), SCREW_SLOT, 2
            )


def _shaded(colour: tuple[int, int, int], shade: tuple[int, int, int]) -> tuple[int, int, int]:
    return (
        min(255, max(0, colour[0] + shade[0])),
        min(255, max(0, colour[1] + shade[1])),
        min(255, max(0, colour[2] + shade[2])),
    )


@dataclass
class Gripper:
    """An orange claw on a grey arm hanging from the top of the view; moves on a smooth path."""

    track: int
    cx: float
    cy: float
    ax: float
    ay: float
    fx: float
    fy: float
    phase_x: float
    phase_y: float
    lift: list[float] = field(default_factory=list)  # per frame: how far the arm is pulled up

    def pose(self, t: int) -> tuple[float, float, float]:
        x = self.cx + self.ax * math.sin(2 * math.pi * self.fx * t + self.phase_x)
        y = self.cy + self.ay * math.sin(2 * math.pi * self.fy * t + self.phase_y)
        opening = 14 + 4 * math.sin(2 * math.pi * 0.05 * t + self.phase_y)
        return x, y - (self.lift[t] if self.lift else 0.0), opening

    def draw(self, img: np.ndarray, label: np.ndarray, x: float, y: float, opening: float) -> None:
        # the arm is not a target: it occludes (label 0) but is not annotated
        arm = np.array(
            [[round(x - 8), -5], [round(x + 8), -5], [round(x + 8), round(y)], [round(x - 8), round(y)]], np.int32
        )
        cv2.fillPoly(img, [arm], ARM_GREY)
        cv2.fillPoly(label, [arm], 0)
        half = opening + 12
        palm = [(-half, 0), (half, 0), (half, 13), (-half, 13)]
        left = [(-half, 13), (-half + 11, 13), (-half + 9, 42), (-half + 2, 42)]
        right = [(half - 11, 13), (half, 13), (half - 2, 42), (half - 9, 42)]
        polys = [np.array([[round(x + u), round(y + v)] for u, v in part], np.int32) for part in (palm, left, right)]
        cv2.fillPoly(img, polys, GRIPPER_ORANGE)
        cv2.fillPoly(label, polys, self.track)
        for tip_x in (-half + 5.5, half - 5.5):
            cv2.circle(img, (round(x + tip_x), round(y + 37)), 3, GRIPPER_TIP, -1)


# ------------------------------------------------------------------------------------------- the scene


class Scene:
    """Static parts of one camera view: housing, belt texture strip, lighting pattern."""

    def __init__(self, rng: np.random.Generator, width: int, height: int, strip_length: int):
        self.width, self.height = width, height
        self.belt_top = int(round(height * 0.18))
        self.belt_bottom = int(round(height * 0.88))
        belt_h = self.belt_bottom - self.belt_top
        self.lanes = tuple(self.belt_top + share * belt_h for share in LANES)

        base = np.empty((height, width, 3), np.uint8)
        steel = np.array([112, 104, 96], np.int16) + rng.integers(-10, 11, 3)
        base[:] = np.clip(steel, 0, 255).astype(np.uint8)
        base[: self.belt_top] = np.clip(steel + rng.integers(-6, 7, (self.belt_top, width, 3)), 0, 255)
        for bx in range(10, width, 40):  # rivets on the housing
            cv2.circle(base, (bx, self.belt_top // 2), 3, (70, 70, 74), -1)
        base[self.belt_bottom :] = (48, 50, 52)
        cv2.line(base, (0, self.belt_top - 1), (width, self.belt_top - 1), (60, 60, 60), 2)
        cv2.line(base, (0, self.belt_bottom), (width, self.belt_bottom), (30, 30, 30), 2)
        self.base = base

        # belt: dark rubber with grain, slats and a faint lane divider, longer than the view so it can scroll
        belt_grey = int(rng.integers(58, 78))
        strip = np.full((belt_h, strip_length, 3), belt_grey, np.int16)
        strip += rng.integers(-9, 10, (belt_h, strip_length, 1), dtype=np.int16)
        for sx in range(int(rng.integers(0, 18)), strip_length, 18):
            strip[:, sx : sx + 2] -= 16
        divider = belt_h // 2
        strip[divider - 1 : divider + 1] += 10
        self.strip = np.clip(strip, 0, 255).astype(np.uint8)

        # a lamp on one side: brighter there, darker on the far side (multiplier per column)
        lamp_x = float(rng.uniform(0, width))
        falloff = float(rng.uniform(0.15, 0.3))
        cols = [1.0 - falloff * ((x - lamp_x) / width) ** 2 for x in range(width)]
        self.spot = np.array(cols, np.float32)[None, :, None]
        self.tint = np.array([1.0 + float(v) for v in rng.uniform(-0.07, 0.07, 3)], np.float32)
        self.noise: np.ndarray | None = None  # sensor noise, drawn on the first frame

    def background(self, offset: int) -> np.ndarray:
        img = self.base.copy()
        img[self.belt_top : self.belt_bottom] = self.strip[:, offset : offset + self.width]
        return img

    def finish(self, img: np.ndarray, gain: float, rng: np.random.Generator) -> np.ndarray:
        """Lighting, sensor noise and a little optical blur, in integer maths (fast and the same on every CPU):
        the light is a per-column, per-channel multiplier in 1/128 steps; the noise (+-4 grey levels) is
        drawn once per scene and shifted by a random offset per frame."""
        scale = np.round(self.spot * (self.tint * np.float32(gain)) * 128).astype(np.uint16)
        lit = (img.astype(np.uint16) * scale) >> 7
        if self.noise is None:
            self.noise = rng.integers(0, 9, (self.height * 2, self.width, 3), dtype=np.uint16)
        start = int(rng.integers(0, self.height))
        lit += self.noise[start : start + self.height]
        out = (np.clip(lit, 4, 259) - 4).astype(np.uint8)
        return cv2.GaussianBlur(out, (3, 3), 0)


def visible_masks(label: np.ndarray, tracks: list[int]) -> dict[int, np.ndarray]:
    pixels = np.bincount(label.ravel(), minlength=max(tracks, default=0) + 1)  # one pass, not one per track
    return {track: label == track for track in tracks if pixels[track] >= MIN_VISIBLE_PIXELS}


# ------------------------------------------------------------------------------------------- belt plan


def _make_defect(rng: np.random.Generator, track: int, radius: float) -> Defect:
    shape = "scratch" if rng.random() < 0.5 else "spot"
    reach = radius * 0.35
    return Defect(
        track=track,
        dx=float(rng.uniform(-reach, reach)),
        dy=float(rng.uniform(-reach, reach)),
        shape=shape,
        length=float(rng.uniform(18, 26) if shape == "scratch" else rng.uniform(12, 16)),
        width=float(rng.uniform(5, 7) if shape == "scratch" else rng.uniform(9, 12)),
        angle=float(rng.uniform(0, 180)),
    )


def _make_item(rng: np.random.Generator, next_track: list[int], category: str) -> BeltItem:
    track = next_track[0]
    next_track[0] += 1
    shade = tuple(int(v) for v in rng.integers(-10, 11, 3))
    if category == "part_A":
        radius = float(rng.uniform(*PART_RADIUS))
        item = BeltItem(track, "part_A", 0.0, 0.0, radius, float(rng.uniform(0, 60)), shade)
        if rng.random() < DEFECT_CHANCE:
            item.defect = _make_defect(rng, next_track[0], radius)
            next_track[0] += 1
        return item
    return BeltItem(track, "screw", 0.0, 0.0, float(rng.uniform(*SCREW_RADIUS)), float(rng.uniform(0, 180)), shade)


def _fill_lane(rng, next_track, lane_y: float, start: float, stop: float, items: list[BeltItem]) -> None:
    """Items along one lane, in belt coordinates, from ``start`` towards ``stop`` (either direction): the
    first one's edge right at ``start``, no item reaching past ``stop``. A look-alike often follows its twin
    closely (same class, a few px apart)."""
    direction = 1 if stop >= start else -1
    edge = start  # the free edge of the last placed item
    previous: BeltItem | None = None
    # classes come from a shuffled bag (one part, one screw), so even the ~6 items a lane carries past the
    # camera in one short video mix both classes: independent draws left whole videos without a screw
    bag: list[str] = []
    while True:
        twin = previous is not None and rng.random() < CLOSE_CHANCE
        if not twin and not bag:
            bag = [CLASS_MIX[int(k)] for k in rng.permutation(len(CLASS_MIX))]
        category = previous.category if twin else bag.pop()
        item = _make_item(rng, next_track, category)
        if previous is not None:
            edge += direction * float(rng.uniform(*(CLOSE_GAP if twin else GAP)))
        centre = edge + direction * item.radius
        if (centre + direction * item.radius - stop) * direction > 0:
            break
        item.s = centre
        item.y = lane_y + float(rng.uniform(-LANE_JITTER, LANE_JITTER))
        items.append(item)
        edge = centre + direction * item.radius
        previous = item


def _plan_belt(rng: np.random.Generator, scene: Scene, n: int, speed: float, idle: str, gap_len: int) -> list[BeltItem]:
    """The belt's load for an n-frame video. ``idle`` is "" (busy line), "start" (the belt runs empty for the
    first ``gap_len`` frames, then parts arrive) or "end" (the last parts leave, then it runs empty)."""
    width = scene.width
    margin = PART_RADIUS[1] + 2
    # belt coordinates that pass through the view during the video: an item at s is at x = s + speed * t
    lo, hi = -speed * (n - 1) - margin, width + margin
    if idle == "start":  # nothing may be in view before frame gap_len: right edges at most -speed*(gap_len-1)
        hi = -speed * (gap_len - 1)
    elif idle == "end":  # everything has left the view at frame n - gap_len: left edges at least width - speed*(...)
        lo = width - speed * (n - gap_len)
    items: list[BeltItem] = []
    next_track = [1]
    tight = int(rng.integers(len(scene.lanes)))  # one lane runs right up to the empty stretch
    for lane, lane_y in enumerate(scene.lanes):
        slack = 0.0 if lane == tight else float(rng.uniform(0, 12))
        if idle == "start":
            _fill_lane(rng, next_track, lane_y, hi - slack, lo, items)
        else:
            _fill_lane(rng, next_track, lane_y, lo + slack - (0 if idle else float(rng.uniform(0, 40))), hi, items)
    # keep only what is in view at some point
    return [it for it in items if any(-it.radius < it.s + speed * t < width + it.radius for t in range(n))]


def _plan_grippers(rng: np.random.Generator, scene: Scene, n: int, gap: range, next_track: int) -> list[Gripper]:
    width, height = scene.width, scene.height
    count = 1 if rng.random() < 0.5 else 2
    grippers = []
    for k in range(count):
        # two grippers work different halves of the view (their paths may still cross)
        low, high = (0.2, 0.8) if count == 1 else ((0.15, 0.45) if k == 0 else (0.55, 0.85))
        ax = float(rng.uniform(width * 0.08, width * 0.25))
        ay = float(rng.uniform(5, 18))
        g = Gripper(
            track=next_track + k,
            cx=float(rng.uniform(width * low, width * high)),
            cy=float(rng.uniform(scene.belt_top - 8, scene.belt_bottom - 62)),
            ax=ax,
            ay=ay,
            # peak speed 2*pi*a*f at most GRIPPER_MAX_SPEED px per frame
            fx=float(rng.uniform(0.4, 1.0)) * GRIPPER_MAX_SPEED / (2 * math.pi * ax),
            fy=float(rng.uniform(0.4, 1.0)) * GRIPPER_MAX_SPEED / (2 * math.pi * ay),
            phase_x=float(rng.uniform(0, 2 * math.pi)),
            phase_y=float(rng.uniform(0, 2 * math.pi)),
        )
        # parked above the view while the line is idle; a quick lift/descent around it
        full_lift, ramp = float(height + 60), 6
        lift = []
        for t in range(n if gap else 0):
            dist = gap.start - t if t < gap.start else (t - gap.stop + 1 if t >= gap.stop else 0)
            lift.append(full_lift if dist <= 0 else max(0.0, full_lift * (1 - dist / ramp)))
        g.lift = lift
        grippers.append(g)
    return grippers


def _categories_by_track(items: list[BeltItem], grippers: list[Gripper]) -> dict[int, str]:
    tracks = {}
    for it in items:
        tracks[it.track] = it.category
        if it.defect is not None:
            tracks[it.defect.track] = "defect"
    for g in grippers:
        tracks[g.track] = "gripper"
    return tracks


def _spread(index: int, chosen: int, total: int, shift: float = 0.0) -> bool:
    """True for ``chosen`` of ``total`` indices, evenly spread (so every split gets its share)."""
    if chosen <= 0 or total <= 0:
        return False
    position = (index + shift) % total
    return math.floor((position + 1) * chosen / total) > math.floor(position * chosen / total)


def video_kind(cfg: dict, index: int) -> tuple[bool, bool]:
    """(keyframe-only, idle line) for video ``index``."""
    n_videos = cfg["num_videos"]
    sparse = _spread(index, cfg["sparse_videos"], n_videos)
    idle_videos = int(round(cfg["negative_fraction"] * n_videos / IDLE_SHARE))
    idle = _spread(index, idle_videos, n_videos, shift=n_videos / max(1, 2 * idle_videos) + 1)
    return sparse, idle


# ------------------------------------------------------------------------------------------- videos


def render_video(cfg: dict, seed: int, index: int, video_path: Path) -> dict:
    """Write one mp4 and return its annotation record (layout.py ``video_annotations`` format)."""
    rng = np.random.default_rng([seed, KIND_VIDEO, index])
    n, width, height = cfg["frames_per_video"], cfg["width"], cfg["height"]
    sparse, idle = video_kind(cfg, index)
    speed = float(rng.uniform(SPEED_MIN, SPEED_MAX))
    scene = Scene(rng, width, height, width + int(math.ceil(SPEED_MAX * n)) + 2)
    gap_len = int(round(IDLE_SHARE * n)) if idle else 0
    idle_at = ("start" if rng.random() < 0.5 else "end") if idle else ""
    gap = range(0, gap_len) if idle_at == "start" else range(n - gap_len, n)
    items = _plan_belt(rng, scene, n, speed, idle_at, gap_len)
    first_gripper = max([it.defect.track if it.defect else it.track for it in items], default=0) + 1
    grippers = _plan_grippers(rng, scene, n, gap, first_gripper)
    tracks = _categories_by_track(items, grippers)
    keyframe = cfg["keyframe_interval"] if sparse else 1

    # lighting: a slow drift (a lamp warming up, daylight), now and then a flickering tube
    ramp_amp = float(rng.uniform(0.1, 0.25)) * (1 if rng.random() < 0.5 else -1)
    cycles = float(rng.uniform(0.5, 1.5))
    phase = float(rng.uniform(0, 2 * math.pi))
    writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"mp4v"), float(cfg["fps"]), (width, height))
    if not writer.isOpened():
        raise UserError("OpenCV cannot write mp4 (mp4v) video on this machine", video_path)
    frames: dict[str, dict] = {}
    seen: set[int] = set()
    try:
        for t in range(n):
            gain = 1.0 + ramp_amp * math.sin(2 * math.pi * cycles * t / n + phase)
            if rng.random() < 0.06:
                gain *= 0.75 if rng.random() < 0.5 else 1.25
            offset = int(round(speed * (n - 1 - t)))  # the belt texture moves with the items
            img = scene.background(offset)
            label = np.zeros((height, width), np.uint16)  # track ids
            for it in items:
                x = it.s + speed * t
                if -it.radius - 30 < x < width + it.radius + 30:
                    it.draw(img, label, x)
            for g in grippers:
                x, y, opening = g.pose(t)
                if y > -50:
                    g.draw(img, label, x, y, opening)
            frame = scene.finish(img, gain, rng)
            writer.write(frame)
            if t % keyframe == 0:
                masks = visible_masks(label, sorted(tracks))
                frames[str(t)] = {str(track): mask_to_rle(mask) for track, mask in masks.items()}
                seen.update(masks)
    finally:
        writer.release()
    return {
        "video": video_path.stem,
        "width": width,
        "height": height,
        "num_frames": n,
        "fps": cfg["fps"],
        "tracks": {str(track): {"category": tracks[track]} for track in sorted(seen)},
        "frames": frames,
    }


# ------------------------------------------------------------------------------------------- stills


def render_image(cfg: dict, seed: int, index: int, negative: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One still of the work cell (a frame of a busy line, or an empty belt for a negative) and its
    per-class visible masks (empty dict for a negative)."""
    rng = np.random.default_rng([seed, KIND_IMAGE, index])
    width, height = cfg["width"], cfg["height"]
    scene = Scene(rng, width, height, width + 1)
    img = scene.background(0)
    label = np.zeros((height, width), np.uint16)  # track ids
    tracks: dict[int, str] = {}
    if not negative:
        items = _plan_belt(rng, scene, 1, 0.0, "", 0)
        first_gripper = max([it.defect.track if it.defect else it.track for it in items], default=0) + 1
        grippers = _plan_grippers(rng, scene, 1, range(0), first_gripper)
        tracks = _categories_by_track(items, grippers)
        for it in items:
            it.draw(img, label, it.s)
        for g in grippers:
            g.draw(img, label, *g.pose(int(rng.integers(0, 200))))
    gain = float(rng.uniform(0.8, 1.2))
    picture = scene.finish(img, gain, rng)
    per_class: dict[str, np.ndarray] = {}
    for track, mask in visible_masks(label, sorted(tracks)).items():
        name = tracks[track]
        per_class[name] = mask if name not in per_class else (per_class[name] | mask)
    return picture, per_class


# ------------------------------------------------------------------------------------------- entry


def fetch(params, out: Path) -> dict:
    """Generate the dataset into ``out`` (data/raw layout) from ``params`` (the typed ``fetch`` section);
    returns what source.json records."""
    cfg = asdict(params.synthetic)
    seed = params.seed
    write_json(out / layout.RAW_CATEGORIES, layout.CATEGORIES, indent=2, atomic=False)
    (out / "videos").mkdir()
    (out / "video_annotations").mkdir()
    for index in tqdm(range(cfg["num_videos"]), desc="fetch: synthetic videos", unit="video"):
        name = f"cell_{index:02d}"
        record = render_video(cfg, seed, index, out / "videos" / f"{name}.mp4")
        write_json(out / "video_annotations" / f"{name}.json", record, indent=None, atomic=False)

    (out / "images").mkdir()
    (out / "masks").mkdir()
    num_neg = int(round(cfg["negative_fraction"] * cfg["num_images"]))
    order = np.random.default_rng([seed, KIND_IMAGE]).permutation(cfg["num_images"])
    negatives = {int(i) for i in order[:num_neg]}
    for index in tqdm(range(cfg["num_images"]), desc="fetch: synthetic stills", unit="image"):
        name = f"still_{index:03d}"
        picture, per_class = render_image(cfg, seed, index, index in negatives)
        _imwrite(out / "images" / f"{name}.jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        for cls, mask in sorted(per_class.items()):
            _imwrite(out / "masks" / f"{name}_{cls}.png", mask.astype(np.uint8) * 255, [])
    return {"source": "synthetic", "seed": seed, "synthetic": cfg}


def _imwrite(path: Path, img: np.ndarray, flags: list[Any]) -> None:
    ok, buf = cv2.imencode(path.suffix, img, flags)
    if not ok:
        raise UserError("OpenCV could not encode the image", path)
    path.write_bytes(buf.tobytes())
