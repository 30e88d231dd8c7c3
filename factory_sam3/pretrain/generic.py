"""A generic synthetic corpus for pretraining the tiny SAM3: NOT the factory data.

Other objects, names and textures than the factory videos (no grippers, parts, screws or defects): flat
coloured shapes — discs, squares, triangles, stars, rings — on smooth random textures, many instances per
image, look-alikes (same concept, same colour) side by side, occlusion by z-order, lighting changes, and
clips whose objects move from slow (a pixel per frame) to fast (a third of their size per frame). It plays
the role SA-1B / SA-V play for the released model: promptable segmentation and tracking where ignoring the
prompt scores badly, plus text-prompted detection of the concept names.

Everything is drawn on the fly from a seed (``numpy.random.Generator``): the same seed gives the same
images, masks and clips on every machine, so pretraining is reproducible and needs no data files.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# concept name -> (shape, base hue in degrees); the names are the detector's text prompts
CONCEPTS = {
    "disc": ("disc", 0),
    "square": ("square", 120),
    "triangle": ("triangle", 220),
    "star": ("star", 55),
    "ring": ("ring", 290),
}
CONCEPT_NAMES = tuple(CONCEPTS)


@dataclass
class Instance:
    concept: int  # index into CONCEPT_NAMES
    cx: float
    cy: float
    radius: float
    angle: float  # degrees
    color: tuple  # RGB uint8
    vx: float = 0.0
    vy: float = 0.0
    vr: float = 0.0  # radius change per frame
    va: float = 0.0  # rotation per frame (degrees)


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple:
    hsv = np.uint8([[[int(h / 2) % 180, int(s * 255), int(v * 255)]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random texture (low-frequency noise around a random colour) with fine grain."""
    base = rng.uniform(40, 200, size=3)
    cells = int(rng.integers(3, 9))
    low = rng.normal(0, rng.uniform(10, 45), size=(cells, cells, 3)).astype(np.float32)
    img = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC) + base
    img += rng.normal(0, 4, size=(size, size, 3)).astype(np.float32)
    return img


def shape_mask(inst: Instance, size: int) -> np.ndarray:
    """The full (unoccluded) HxW bool mask of one instance."""
    shape = CONCEPTS[CONCEPT_NAMES[inst.concept]][0]
    canvas = np.zeros((size, size), np.uint8)
    c = (inst.cx, inst.cy)
    r = max(inst.radius, 2.0)
    a = np.deg2rad(inst.angle)
    if shape == "disc":
        cv2.circle(canvas, (int(round(c[0] * 4)), int(round(c[1] * 4))), int(round(r * 4)), 1, -1, cv2.LINE_8, 2)
    elif shape == "ring":
        cv2.circle(canvas, (int(round(c[0] * 4)), int(round(c[1] * 4))), int(round(r * 4)), 1, -1, cv2.LINE_8, 2)
        cv2.circle(canvas, (int(round(c[0] * 4)), int(round(c[1] * 4))), int(round(r * 0.55 * 4)), 0, -1, cv2.LINE_8, 2)
    else:
        if shape == "square":
            angles = a + np.pi / 4 + np.arange(4) * np.pi / 2
            radii = np.full(4, r)
        elif shape == "triangle":
            angles = a - np.pi / 2 + np.arange(3) * 2 * np.pi / 3
            radii = np.full(3, r * 1.15)
        else:  # star
            angles = a - np.pi / 2 + np.arange(10) * np.pi / 5
            radii = np.where(np.arange(10) % 2 == 0, r * 1.2, r * 0.5)
        pts = np.stack([c[0] + radii * np.cos(angles), c[1] + radii * np.sin(angles)], -1)
        cv2.fillPoly(canvas, [np.round(pts * 4).astype(np.int32)], 1, cv2.LINE_8, 2)
    return canvas.astype(bool)


def render(instances: list[Instance], bg: np.ndarray, size: int, light: float = 1.0) -> tuple[np.ndarray, list]:
    """Draw ``instances`` in order (later ones occlude earlier ones). Returns the RGB uint8 image and each
    instance's visible mask."""
    img = bg.copy()
    full = [shape_mask(inst, size) for inst in instances]
    kernel = np.ones((3, 3), np.uint8)
    for inst, m in zip(instances, full):
        # a darker rim, as real objects have edges and shadows: touching look-alikes stay separable
        inner = cv2.erode(m.astype(np.uint8), kernel, iterations=1).astype(bool)
        color = np.asarray(inst.color, np.float32)
        img[m] = color * 0.55
        img[inner] = color
    visible = []
    for i, m in enumerate(full):
        v = m.copy()
        for later in full[i + 1 :]:
            v &= ~later
        visible.append(v)
    img = np.clip(img * light, 0, 255).astype(np.uint8)
    return img, visible


def _place(
    rng: np.random.Generator,
    size: int,
    count: int,
    r_min: float,
    r_max: float,
    concepts: np.ndarray,
    colors: dict,
    crowded: bool,
) -> list[Instance]:
    out: list[Instance] = []
    # look-alikes side by side: crowded scenes put same-concept instances next to each other
    anchor = rng.uniform(0.25 * size, 0.75 * size, size=2)
    for k in range(count):
        concept = int(concepts[k])
        r = float(rng.uniform(r_min, r_max))
        for _ in range(20):
            if crowded and out and rng.random() < 0.6:
                ref = out[int(rng.integers(len(out)))]
                ang = rng.uniform(0, 2 * np.pi)
                dist = ref.radius + r + rng.uniform(-0.1, 0.6) * r
                cx, cy = ref.cx + dist * np.cos(ang), ref.cy + dist * np.sin(ang)
            elif crowded:
                cx, cy = anchor + rng.normal(0, size * 0.15, size=2)
            else:
                cx, cy = rng.uniform(r, size - r, size=2)
            if not (r * 0.5 <= cx <= size - r * 0.5 and r * 0.5 <= cy <= size - r * 0.5):
                continue
            # keep most of every object visible: no centre inside another object
            if all(np.hypot(cx - o.cx, cy - o.cy) > 0.8 * max(r, o.radius) for o in out):
                break
        out.append(Instance(concept, float(cx), float(cy), r, float(rng.uniform(0, 360)), colors[concept]))
    return out


def scene(
    rng: np.random.Generator,
    size: int = 224,
    min_objects: int = 3,
    max_objects: int = 8,
    r_min: float = 10.0,
    r_max: float = 28.0,
    negative_prob: float = 0.0,
    crowded_prob: float = 0.6,
):
    """Instances of one generic scene (no motion yet) and its background. Each concept present gets one
    colour per scene (its base hue, jittered), so instances of a concept are look-alikes."""
    bg = background(rng, size)
    if rng.random() < negative_prob:
        return [], bg
    count = int(rng.integers(min_objects, max_objects + 1))
    num_concepts = int(rng.integers(1, min(3, count) + 1))
    chosen = rng.choice(len(CONCEPT_NAMES), size=num_concepts, replace=False)
    concepts = rng.choice(chosen, size=count)
    colors = {}
    for c in chosen:
        hue = CONCEPTS[CONCEPT_NAMES[int(c)]][1] + rng.uniform(-15, 15)
        colors[int(c)] = _hsv_to_rgb(hue, rng.uniform(0.55, 0.95), rng.uniform(0.55, 0.95))
    crowded = bool(rng.random() < crowded_prob)
    return _place(rng, size, count, r_min, r_max, concepts, colors, crowded), bg


def image_sample(rng: np.random.Generator, size: int = 224, **kwargs):
    """One still: (RGB uint8 image, list of visible masks, list of concept indices); tiny slivers dropped."""
    instances, bg = scene(rng, size, **kwargs)
    img, masks = render(instances, bg, size, light=float(rng.uniform(0.8, 1.15)))
    keep = [i for i, m in enumerate(masks) if m.sum() >= 20]
    return img, [masks[i] for i in keep], [instances[i].concept for i in keep]


def clip_sample(rng: np.random.Generator, num_frames: int, size: int = 224, speed: tuple = (0.5, 8.0), **kwargs):
    """One clip: frames ``[T, S, S, 3]`` uint8, masks ``[T, N, S, S]`` bool (visible part per frame), concepts.

    Objects move with constant velocity (speed drawn per clip between ``speed`` px/frame, direction per
    object), bounce off the borders, rotate and breathe a little; z-order fixed, so they occlude each other;
    lighting drifts over the clip."""
    instances, bg = scene(rng, size, **kwargs)
    level = float(rng.uniform(*speed))
    for inst in instances:
        ang = rng.uniform(0, 2 * np.pi)
        v = level * rng.uniform(0.6, 1.2)
        inst.vx, inst.vy = v * np.cos(ang), v * np.sin(ang)
        inst.va = float(rng.uniform(-4, 4))
        inst.vr = float(rng.uniform(-0.2, 0.2))
    light0, light1 = rng.uniform(0.8, 1.15, size=2)
    frames, masks = [], []
    for t in range(num_frames):
        light = light0 + (light1 - light0) * t / max(num_frames - 1, 1)
        img, vis = render(instances, bg, size, light=float(light))
        frames.append(img)
        masks.append(np.stack(vis) if vis else np.zeros((0, size, size), bool))
        for inst in instances:
            inst.cx += inst.vx
            inst.cy += inst.vy
            if not inst.radius <= inst.cx <= size - inst.radius:
                inst.vx = -inst.vx
            if not inst.radius <= inst.cy <= size - inst.radius:
                inst.vy = -inst.vy
            inst.angle += inst.va
            inst.radius = float(np.clip(inst.radius + inst.vr, 6.0, 36.0))
    return np.stack(frames), np.stack(masks, axis=0), [inst.concept for inst in instances]
