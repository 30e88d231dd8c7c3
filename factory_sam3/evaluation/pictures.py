"""Pictures people would rather look at than read: mask overlays (ground truth beside prediction),
a short tracked clip per run (GIF), and the training loss curves. All offline (matplotlib Agg, PIL).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from factory_sam3.io import atomic_file

# One colour per class (by category order) and per tracked object; readable on dark and light frames.
PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 190),
]


def colour(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def draw_masks(
    image: np.ndarray, masks: Sequence[tuple[np.ndarray, tuple[int, int, int]]], alpha: float = 0.45
) -> np.ndarray:
    """Blend each (mask, rgb) onto an RGB uint8 image and trace its contour (2 px, full colour)."""
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    for mask, rgb in masks:
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            continue
        tint = np.array(rgb, dtype=np.float32)
        out[mask] = (out[mask].astype(np.float32) * (1 - alpha) + tint * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in rgb), thickness=max(1, out.shape[0] // 150))
    return out


def overlay_figure(
    image: np.ndarray,
    gt: Sequence[Mapping],
    pred: Sequence[Mapping],
    class_names: Sequence[str],
    out_path: str | os.PathLike,
    title: str = "",
) -> Path:
    """Save a PNG: ground truth (left) beside prediction (right), coloured per class, with a legend.

    ``gt`` / ``pred`` are instances {"category": name, "mask": HxW bool, "score": float (pred only)}.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    class_colour = {name: colour(i) for i, name in enumerate(class_names)}

    def painted(instances):
        return draw_masks(
            image, [(inst["mask"], class_colour.get(inst["category"], (255, 255, 255))) for inst in instances]
        )

    height, width = image.shape[:2]
    fig, axes = plt.subplots(1, 2, figsize=(2 * max(3.0, width / 80), max(2.6, height / 80) + 0.8), dpi=100)
    for axis, instances, label in ((axes[0], gt, "ground truth"), (axes[1], pred, "prediction")):
        axis.imshow(painted(instances))
        axis.set_title(f"{label} ({len(instances)})", fontsize=9)
        axis.axis("off")
    for inst in pred:  # scores beside each predicted instance
        ys, xs = np.nonzero(inst["mask"])
        if len(xs) and "score" in inst:
            axes[1].text(
                xs.min(),
                max(ys.min() - 2, 0),
                f"{inst['score']:.2f}",
                fontsize=6,
                color="white",
                bbox={"facecolor": "black", "alpha": 0.5, "pad": 0.5, "linewidth": 0},
            )
    handles = [Patch(color=np.array(class_colour[n]) / 255, label=n) for n in class_names]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    out_path = Path(out_path)
    with atomic_file(out_path, "wb") as handle:
        fig.savefig(handle, format="png")
    plt.close(fig)
    return out_path


def tracking_gif(
    frames: Sequence[np.ndarray],
    gt: Mapping[str, Sequence[np.ndarray | None]],
    pred: Mapping[str, Sequence[np.ndarray | None]],
    out_path: str | os.PathLike,
    labels: Mapping[str, str] | None = None,
    fps: float = 5.0,
) -> Path:
    """Save a GIF: per frame, ground truth (left) beside the tracked prediction (right).

    ``gt`` / ``pred`` map an object id to one mask (or None) per frame; an object keeps its colour.
    """
    from PIL import Image, ImageDraw

    object_ids = list(dict.fromkeys([*gt, *pred]))
    object_colour = {obj: colour(i) for i, obj in enumerate(object_ids)}
    labels = labels or {}
    pictures = []
    for t, frame in enumerate(frames):
        halves = []
        for masks in (gt, pred):
            painted = draw_masks(frame, [(m[t], object_colour[obj]) for obj, m in masks.items() if m[t] is not None])
            halves.append(painted)
        gap = np.full((frame.shape[0], 4, 3), 255, dtype=np.uint8)
        picture = Image.fromarray(np.concatenate([halves[0], gap, halves[1]], axis=1))
        strip = Image.new("RGB", (picture.width, 14 + 12 * ((len(object_ids) + 3) // 4)), (0, 0, 0))
        draw = ImageDraw.Draw(strip)
        draw.text((2, 1), f"frame {t}   left: ground truth   right: tracked", fill=(255, 255, 255))
        for i, obj in enumerate(object_ids):
            x, y = 2 + (i % 4) * (picture.width // 4), 13 + 12 * (i // 4)
            draw.rectangle((x, y + 2, x + 8, y + 10), fill=object_colour[obj])
            draw.text((x + 11, y), str(labels.get(obj, obj))[:18], fill=(255, 255, 255))
        canvas = Image.new("RGB", (picture.width, picture.height + strip.height))
        canvas.paste(picture, (0, 0))
        canvas.paste(strip, (0, picture.height))
        pictures.append(canvas.convert("P", palette=Image.Palette.ADAPTIVE, colors=128))
    if not pictures:
        raise ValueError("no frames to draw")
    out_path = Path(out_path)
    with atomic_file(out_path, "wb") as handle:
        pictures[0].save(
            handle, format="GIF", save_all=True, append_images=pictures[1:], duration=int(1000 / fps), loop=0
        )
    return out_path


def read_loss_csv(path: str | os.PathLike) -> dict[str, list[float]]:
    """Columns of a DVC plot CSV (header row, numeric values) as lists; non-numeric cells skipped."""
    columns: dict[str, list[float]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                try:
                    columns.setdefault(key, []).append(float(value))
                except (TypeError, ValueError):
                    continue
    return columns


def loss_curves(
    csv_paths: Mapping[str, str | os.PathLike], out_path: str | os.PathLike, y: str = "loss", x: str = "step"
) -> Path | None:
    """Plot the ``y`` column of each existing CSV against ``x`` (one panel per stage); None if none exist."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {}
    for name, path in csv_paths.items():
        if Path(path).is_file():
            data = read_loss_csv(path)
            if y in data and data[y]:
                series[name] = (data.get(x, list(range(len(data[y]))))[: len(data[y])], data[y])
    if not series:
        return None
    fig, axes = plt.subplots(1, len(series), figsize=(4.5 * len(series), 3.2), dpi=100, squeeze=False)
    for axis, (name, (xs, ys)) in zip(axes[0], series.items()):
        axis.plot(xs, ys, linewidth=0.8, alpha=0.5, label=y)
        if len(ys) >= 10:  # a moving average makes the trend readable through per-step noise
            window = max(5, len(ys) // 20)
            smooth = np.convolve(ys, np.ones(window) / window, mode="valid")
            axis.plot(xs[window - 1 :], smooth, linewidth=1.6, label=f"{y} (mean of {window})")
        axis.set_title(name, fontsize=10)
        axis.set_xlabel(x)
        axis.set_ylabel(y)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    fig.tight_layout()
    out_path = Path(out_path)
    with atomic_file(out_path, "wb") as handle:
        fig.savefig(handle, format="png")
    plt.close(fig)
    return out_path
