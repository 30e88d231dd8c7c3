"""The embedded default dataset: a deterministic, offline, synthetic factory work cell.

A camera looks down on a conveyor belt. Parts (green hexagons, some with dark scratches or spots = defects)
and screws (small silver discs with a slot) ride the belt from left to right; one or two robot grippers
(orange claws on grey arms) sweep over the belt, occluding what is below them, and lift out of view for a
while. While the belt is empty and the grippers are up, no target is in view: those frames are the
negatives (``negative_fraction`` of each video). Lighting ramps and flickers, the belt texture moves, the
sensor adds noise.

Every object is drawn into a label map at the same time as into the picture, in depth order, so the
per-frame masks are exactly the VISIBLE pixels of each instance (what the gripper covers is removed from the
part below it) and track ids stay stable through a video.

Classes are made easy to tell apart (shape, colour and size), so a tiny model learns them in a few CPU steps:
gripper = large orange U, part_A = medium green hexagon, defect = small near-black mark on a part,
screw = small silver disc.

Determinism: every random draw comes from ``numpy.random.default_rng([seed, kind, index])``, pixel maths is
integer or IEEE multiply/add (no vectorised transcendental functions, whose last bit can vary by CPU), JSON
keys are sorted and nothing records a time, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from factory_sam3 import layout
from factory_sam3.errors import UserError
from factory_sam3.formats.rle import mask_to_rle
from factory_sam3.sources.common import dump_json

# BGR colours (OpenCV order)
PART_GREEN = (60, 165, 70)
PART_RING = (110, 205, 120)
DEFECT_DARK = (22, 24, 34)
SCREW_SILVER = (205, 205, 212)
SCREW_SLOT = (90, 90, 95)
GRIPPER_ORANGE = (20, 135, 250)
GRIPPER_TIP = (10, 90, 190)
ARM_GREY = (128, 124, 120)

SPEED_MIN, SPEED_MAX = 6, 9  # belt speed in pixels per frame
PART_SHARE = 0.5  # belt items that are parts (the rest are screws); with DEFECT_CHANCE keeps classes balanced
DEFECT_CHANCE = 0.9
MIN_VISIBLE_PIXELS = 12  # slivers smaller than this at the frame edge are not annotated
JPEG_QUALITY = 95
DEFAULTS = {
    "num_videos": 10,
    "frames_per_video": 48,
    "fps": 10,
    "width": 256,
    "height": 192,
    "num_images": 40,
    "negative_fraction": 0.15,
    "sparse_videos": 3,
    "keyframe_interval": 4,
}
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
            pts = cv2.ellipse2Poly((round(x), round(y)), (round(self.length / 2), round(self.width / 2)),
                                   round(self.angle), 0, 360, 20)
            return pts.astype(np.int32)
        c, s = math.cos(math.radians(self.angle)), math.sin(math.radians(self.angle))
        hl, hw = self.length / 2, self.width / 2
        corners = [(-hl, -hw), (hl, -hw * 0.4), (hl, hw * 0.4), (-hl, hw)]  # tapering scratch
        return np.array([[round(x + u * c - v * s), round(y + u * s + v * c)] for u, v in corners], np.int32)


@dataclass
class BeltItem:
    """A part or a screw riding the belt: x(t) = s + speed * t."""

    track: int
    category: str  # "part_A" | "screw"
    s: float
    y: float
    radius: float
    angle: float
    defect: Defect | None = None

    def draw(self, img: np.ndarray, label: np.ndarray, x: float) -> None:
        if self.category == "part_A":
            pts = np.array([[round(x + self.radius * math.cos(math.radians(self.angle + 60 * k))),
                             round(self.y + self.radius * math.sin(math.radians(self.angle + 60 * k)))]
                            for k in range(6)], np.int32)
            cv2.fillPoly(img, [pts], PART_GREEN)
            cv2.fillPoly(label, [pts], self.track)
            cv2.circle(img, (round(x), round(self.y)), round(self.radius * 0.45), PART_RING, 2)
            if self.defect is not None:
                poly = self.defect.polygon(x, self.y)
                cv2.fillPoly(img, [poly], DEFECT_DARK)
                cv2.fillPoly(label, [poly], self.defect.track)
        else:
            centre, r = (round(x), round(self.y)), round(self.radius)
            cv2.circle(img, centre, r, SCREW_SILVER, -1)
            cv2.circle(label, centre, r, self.track, -1)
            c, s = math.cos(math.radians(self.angle)), math.sin(math.radians(self.angle))
            d = r - 2
            cv2.line(img, (round(x - d * c), round(self.y - d * s)), (round(x + d * c), round(self.y + d * s)),
                     SCREW_SLOT, 2)


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
        opening = 12 + 5 * math.sin(2 * math.pi * 0.07 * t + self.phase_y)
        return x, y - (self.lift[t] if self.lift else 0.0), opening

    def draw(self, img: np.ndarray, label: np.ndarray, x: float, y: float, opening: float) -> None:
        # the arm is not a target: it occludes (label 0) but is not annotated
        arm = np.array([[round(x - 7), -5], [round(x + 7), -5], [round(x + 7), round(y)], [round(x - 7), round(y)]],
                       np.int32)
        cv2.fillPoly(img, [arm], ARM_GREY)
        cv2.fillPoly(label, [arm], 0)
        half = opening + 9
        palm = [(-half, 0), (half, 0), (half, 11), (-half, 11)]
        left = [(-half, 11), (-half + 9, 11), (-half + 7, 34), (-half + 2, 34)]
        right = [(half - 9, 11), (half, 11), (half - 2, 34), (half - 7, 34)]
        polys = [np.array([[round(x + u), round(y + v)] for u, v in part], np.int32) for part in (palm, left, right)]
        cv2.fillPoly(img, polys, GRIPPER_ORANGE)
        cv2.fillPoly(label, polys, self.track)
        for tip_x in (-half + 4.5, half - 4.5):
            cv2.circle(img, (round(x + tip_x), round(y + 30)), 3, GRIPPER_TIP, -1)


# ------------------------------------------------------------------------------------------- the scene

class Scene:
    """Static parts of one camera view: housing, belt texture strip, lighting pattern."""

    def __init__(self, rng: np.random.Generator, width: int, height: int, strip_length: int):
        self.width, self.height = width, height
        self.belt_top = int(round(height * 0.18))
        self.belt_bottom = int(round(height * 0.88))
        belt_h = self.belt_bottom - self.belt_top

        base = np.empty((height, width, 3), np.uint8)
        steel = np.array([112, 104, 96], np.int16) + rng.integers(-10, 11, 3)
        base[:] = np.clip(steel, 0, 255).astype(np.uint8)
        base[: self.belt_top] = np.clip(steel + rng.integers(-6, 7, (self.belt_top, width, 3)), 0, 255)
        for bx in range(10, width, 40):  # rivets on the housing
            cv2.circle(base, (bx, self.belt_top // 2), 3, (70, 70, 74), -1)
        base[self.belt_bottom:] = (48, 50, 52)
        cv2.line(base, (0, self.belt_top - 1), (width, self.belt_top - 1), (60, 60, 60), 2)
        cv2.line(base, (0, self.belt_bottom), (width, self.belt_bottom), (30, 30, 30), 2)
        self.base = base

        # belt: dark rubber with grain and slats, longer than the view so it can scroll
        belt_grey = int(rng.integers(58, 78))
        strip = np.full((belt_h, strip_length, 3), belt_grey, np.int16)
        strip += rng.integers(-9, 10, (belt_h, strip_length, 1), dtype=np.int16)
        for sx in range(int(rng.integers(0, 18)), strip_length, 18):
            strip[:, sx : sx + 2] -= 16
        self.strip = np.clip(strip, 0, 255).astype(np.uint8)

        # a lamp on one side: brighter there, darker on the far side (multiplier per column)
        lamp_x = float(rng.uniform(0, width))
        falloff = float(rng.uniform(0.15, 0.35))
        cols = [1.0 - falloff * ((x - lamp_x) / width) ** 2 for x in range(width)]
        self.spot = np.array(cols, np.float32)[None, :, None]
        self.tint = np.array([1.0 + float(v) for v in rng.uniform(-0.07, 0.07, 3)], np.float32)

    def background(self, offset: int) -> np.ndarray:
        img = self.base.copy()
        img[self.belt_top : self.belt_bottom] = self.strip[:, offset : offset + self.width]
        return img

    def finish(self, img: np.ndarray, gain: float, rng: np.random.Generator) -> np.ndarray:
        """Lighting, sensor noise and a little optical blur."""
        lit = img.astype(np.float32) * (self.spot * (self.tint * np.float32(gain)))
        lit += rng.integers(-4, 5, img.shape, dtype=np.int16).astype(np.float32)
        out = np.clip(lit, 0, 255).astype(np.uint8)
        return cv2.GaussianBlur(out, (3, 3), 0)


def visible_masks(label: np.ndarray, tracks: list[int]) -> dict[int, np.ndarray]:
    out = {}
    for track in tracks:
        mask = label == track
        if int(mask.sum()) >= MIN_VISIBLE_PIXELS:
            out[track] = mask
    return out


def _make_defect(rng: np.random.Generator, track: int, radius: float) -> Defect:
    shape = "scratch" if rng.random() < 0.5 else "spot"
    reach = radius * 0.4
    return Defect(
        track=track,
        dx=float(rng.uniform(-reach, reach)),
        dy=float(rng.uniform(-reach, reach)),
        shape=shape,
        length=float(rng.uniform(14, 18) if shape == "scratch" else rng.uniform(10, 13)),
        width=float(rng.uniform(4.5, 6) if shape == "scratch" else rng.uniform(7, 9)),
        angle=float(rng.uniform(0, 180)),
    )


def _make_item(rng: np.random.Generator, next_track: list[int], s: float, y: float, category: str,
               defect_chance: float) -> BeltItem:
    track = next_track[0]
    next_track[0] += 1
    if category == "part_A":
        radius = float(rng.uniform(16, 20))
        item = BeltItem(track, "part_A", s, y, radius, float(rng.uniform(0, 60)))
        if rng.random() < defect_chance:
            item.defect = _make_defect(rng, next_track[0], radius)
            next_track[0] += 1
        return item
    return BeltItem(track, "screw", s, y, float(rng.uniform(7, 8.5)), float(rng.uniform(0, 180)))


# ------------------------------------------------------------------------------------------- videos

def _fill_batch(rng, next_track, start: float, stop: float, belt: tuple[float, float], items: list[BeltItem]) -> None:
    """Place items along belt coordinates from ``start`` towards ``stop`` (either direction): the first one
    right at ``start`` (the edge of the empty-belt gap), the others spaced so no two overlap."""
    direction = 1 if stop >= start else -1
    s = start
    previous_radius = None
    while (s - stop) * direction <= 0:
        category = "part_A" if rng.random() < PART_SHARE else "screw"
        item = _make_item(rng, next_track, 0.0, 0.0, category, defect_chance=DEFECT_CHANCE)
        if previous_radius is None:
            s += direction * item.radius
        else:
            s += direction * (previous_radius + item.radius + float(rng.uniform(4, 35)))
        if (s - stop) * direction > 0:
            break
        item.s = s
        item.y = float(rng.uniform(belt[0] + item.radius + 2, belt[1] - item.radius - 2))
        items.append(item)
        previous_radius = item.radius


def _plan_video(rng: np.random.Generator, cfg: dict, scene: Scene) -> tuple[list[BeltItem], list[Gripper], int, range]:
    n, width = cfg["frames_per_video"], cfg["width"]
    speed = int(rng.integers(SPEED_MIN, SPEED_MAX + 1))
    gap_len = int(round(cfg["negative_fraction"] * n))
    where = int(rng.integers(0, 3))  # 0: empty belt at the start, 1: in the middle, 2: at the end
    if gap_len == 0:
        gap_start = n
    elif where == 0:
        gap_start = 0
    elif where == 2 or n - gap_len - n // 4 <= n // 4:
        gap_start = n - gap_len
    else:
        gap_start = int(rng.integers(n // 4, n - gap_len - n // 4))
    gap = range(gap_start, gap_start + gap_len)
    belt = (float(scene.belt_top), float(scene.belt_bottom))
    items: list[BeltItem] = []
    next_track = [1]
    margin = 24.0  # more than the largest item radius
    if gap_start > 0:
        # items that have left the view when the gap starts (x(gap_start) >= width + radius); the first
        # one leaves exactly then, the others earlier
        _fill_batch(rng, next_track, width - speed * gap_start, width + margin, belt, items)
    if gap.stop < n:
        # items that enter the view only after the gap (x(gap.stop - 1) <= -radius); the first one enters
        # right after it, the others later
        _fill_batch(rng, next_track, -speed * (gap.stop - 1), -margin - speed * (n - 1), belt, items)
    # nothing may show during the gap: drop anything the radius bookkeeping let through
    # and anything never in view at all
    items = [
        it for it in items
        if not any(-it.radius < it.s + speed * t < width + it.radius for t in gap)
        and any(-it.radius < it.s + speed * t < width + it.radius for t in range(n))
    ]

    grippers = []
    for _ in range(int(rng.integers(1, 3))):
        g = Gripper(
            track=next_track[0],
            cx=float(rng.uniform(width * 0.25, width * 0.75)),
            cy=float(rng.uniform(scene.belt_top + 5, scene.belt_bottom - 55)),
            ax=float(rng.uniform(width * 0.15, width * 0.3)),
            ay=float(rng.uniform(8, 25)),
            fx=float(rng.uniform(0.015, 0.04)),
            fy=float(rng.uniform(0.03, 0.07)),
            phase_x=float(rng.uniform(0, 2 * math.pi)),
            phase_y=float(rng.uniform(0, 2 * math.pi)),
        )
        next_track[0] += 1
        full_lift = float(cfg["height"] + 60)
        ramp = 5
        lift = []
        for t in range(n):
            if not gap:
                lift.append(0.0)
                continue
            dist = gap.start - t if t < gap.start else (t - gap.stop + 1 if t >= gap.stop else 0)
            lift.append(full_lift if dist <= 0 else max(0.0, full_lift * (1 - dist / ramp)))
        g.lift = lift
        grippers.append(g)
    return items, grippers, speed, gap


def _categories_by_track(items: list[BeltItem], grippers: list[Gripper]) -> dict[int, str]:
    tracks = {}
    for it in items:
        tracks[it.track] = it.category
        if it.defect is not None:
            tracks[it.defect.track] = "defect"
    for g in grippers:
        tracks[g.track] = "gripper"
    return tracks


def render_video(cfg: dict, seed: int, index: int, video_path: Path) -> dict:
    """Write one mp4 and return its annotation record (layout.py ``video_annotations`` format)."""
    rng = np.random.default_rng([seed, KIND_VIDEO, index])
    n, width, height = cfg["frames_per_video"], cfg["width"], cfg["height"]
    scene = Scene(rng, width, height, width + SPEED_MAX * n + 1)
    items, grippers, speed, gap = _plan_video(rng, cfg, scene)
    tracks = _categories_by_track(items, grippers)
    sparse = index >= cfg["num_videos"] - cfg["sparse_videos"]
    keyframe = cfg["keyframe_interval"] if sparse else 1

    ramp_amp = float(rng.uniform(0.1, 0.3)) * (1 if rng.random() < 0.5 else -1)
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
            if rng.random() < 0.08:  # a fluorescent tube flickers
                gain *= 0.7 if rng.random() < 0.5 else 1.3
            offset = speed * (n - 1 - t)
            img = scene.background(offset)
            label = np.zeros((height, width), np.uint8)
            for it in items:
                x = it.s + speed * t
                if -it.radius - 30 < x < width + it.radius + 30:
                    it.draw(img, label, x)
            for g in grippers:
                x, y, opening = g.pose(t)
                if y > -40:
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
    """One still of the work cell and its per-class visible masks (empty dict for a negative)."""
    rng = np.random.default_rng([seed, KIND_IMAGE, index])
    width, height = cfg["width"], cfg["height"]
    scene = Scene(rng, width, height, width + 1)
    img = scene.background(0)
    label = np.zeros((height, width), np.uint8)
    tracks: dict[int, str] = {}
    if not negative:
        next_track = [1]
        placed: list[BeltItem] = []
        for _ in range(int(rng.integers(3, 7))):
            category = "part_A" if rng.random() < PART_SHARE else "screw"
            item = _make_item(rng, next_track, 0.0, 0.0, category, defect_chance=DEFECT_CHANCE)
            for _attempt in range(20):  # items do not overlap on the belt
                item.s = float(rng.uniform(item.radius, width - item.radius))
                item.y = float(rng.uniform(scene.belt_top + item.radius + 2, scene.belt_bottom - item.radius - 2))
                if all(math.hypot(item.s - o.s, item.y - o.y) > item.radius + o.radius + 4 for o in placed):
                    placed.append(item)
                    break
        grippers = []
        for _ in range(int(rng.integers(1, 3))):
            grippers.append(Gripper(next_track[0], float(rng.uniform(30, width - 30)),
                                    float(rng.uniform(scene.belt_top, scene.belt_bottom - 45)),
                                    0, 0, 0, 0, 0, float(rng.uniform(0, 2 * math.pi))))
            next_track[0] += 1
        tracks = _categories_by_track(placed, grippers)
        for it in placed:
            it.draw(img, label, it.s)
        for g in grippers:
            g.draw(img, label, *g.pose(0))
    gain = float(rng.uniform(0.7, 1.25))
    picture = scene.finish(img, gain, rng)
    per_class: dict[str, np.ndarray] = {}
    for track, mask in visible_masks(label, sorted(tracks)).items():
        name = tracks[track]
        per_class[name] = mask if name not in per_class else (per_class[name] | mask)
    return picture, per_class


# ------------------------------------------------------------------------------------------- entry

def _config(params: dict) -> dict:
    cfg = dict(DEFAULTS)
    cfg.update(params.get("synthetic") or {})
    ints = ("num_videos", "frames_per_video", "width", "height", "num_images", "sparse_videos", "keyframe_interval")
    for key in ints:
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UserError(f"'fetch.synthetic.{key}' must be a non-negative integer, got {value!r}", "params.yaml")
    if cfg["width"] < 96 or cfg["height"] < 96 or cfg["width"] % 2 or cfg["height"] % 2:
        raise UserError("'fetch.synthetic.width/height' must be even and at least 96", "params.yaml")
    if cfg["frames_per_video"] < 8:
        raise UserError("'fetch.synthetic.frames_per_video' must be at least 8", "params.yaml")
    if cfg["keyframe_interval"] < 1:
        raise UserError("'fetch.synthetic.keyframe_interval' must be at least 1", "params.yaml")
    if cfg["sparse_videos"] > cfg["num_videos"]:
        raise UserError("'fetch.synthetic.sparse_videos' cannot exceed num_videos", "params.yaml")
    frac = cfg["negative_fraction"]
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 <= frac <= 0.5:
        raise UserError(f"'fetch.synthetic.negative_fraction' must be between 0 and 0.5, got {frac!r}", "params.yaml")
    fps = cfg["fps"]
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or fps <= 0:
        raise UserError(f"'fetch.synthetic.fps' must be a positive number, got {fps!r}", "params.yaml")
    return cfg


def fetch(params: dict, out: Path) -> dict:
    """Generate the dataset into ``out`` (data/raw layout); returns what source.json records."""
    cfg = _config(params)
    seed = params.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UserError(f"'fetch.seed' must be an integer, got {seed!r}", "params.yaml")
    dump_json(out / "categories.json", layout.CATEGORIES, indent=2)
    (out / "videos").mkdir()
    (out / "video_annotations").mkdir()
    for index in tqdm(range(cfg["num_videos"]), desc="fetch: synthetic videos", unit="video"):
        name = f"cell_{index:02d}"
        record = render_video(cfg, seed, index, out / "videos" / f"{name}.mp4")
        dump_json(out / "video_annotations" / f"{name}.json", record)

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
