"""Pictures: overlays, tracked-clip GIF and loss curves are real, readable images of what was drawn."""

from __future__ import annotations

import numpy as np
from PIL import Image

from factory_sam3.evaluation.pictures import colour, draw_masks, loss_curves, overlay_figure, tracking_gif


def square(shape, top, left, size):
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


def test_draw_masks_tints_only_inside_the_mask():
    image = np.full((40, 40, 3), 100, dtype=np.uint8)
    mask = square((40, 40), 10, 10, 12)
    out = draw_masks(image, [(mask, (255, 0, 0))])
    assert out[16, 16, 0] > 150 and out[16, 16, 1] < 100  # interior tinted red
    assert (out[~mask] == 100).all(axis=1).mean() > 0.9  # outside untouched except the contour
    assert (out[0, 0] == 100).all()
    np.testing.assert_array_equal(image, np.full((40, 40, 3), 100, dtype=np.uint8))  # input not modified


def test_overlay_figure_writes_png_with_both_panels(tmp_path):
    image = np.zeros((96, 128, 3), dtype=np.uint8)
    gt = [{"category": "gripper", "mask": square((96, 128), 10, 10, 30)}]
    pred = [
        {"category": "gripper", "mask": square((96, 128), 12, 12, 30), "score": 0.87},
        {"category": "screw", "mask": square((96, 128), 60, 90, 10), "score": 0.4},
    ]
    path = overlay_figure(image, gt, pred, ["gripper", "part_A", "defect", "screw"], tmp_path / "o.png", title="t")
    picture = np.asarray(Image.open(path).convert("RGB"))
    assert picture.shape[1] > picture.shape[0]  # side by side
    left, right = picture[:, : picture.shape[1] // 2], picture[:, picture.shape[1] // 2 :]
    red = np.array(colour(0))
    screw = np.array(colour(3))

    def has(panel, rgb):
        return (np.abs(panel.astype(int) - rgb).sum(axis=2) < 40).any()

    assert has(left, red) and has(right, red)
    assert has(right, screw) and not has(left[: int(picture.shape[0] * 0.8)], screw)  # legend at the bottom
    assert not list(tmp_path.glob(".*tmp*"))


def test_tracking_gif_has_one_picture_per_frame(tmp_path):
    frames = [np.full((48, 64, 3), 30 * t, dtype=np.uint8) for t in range(5)]
    gt = {"1": [square((48, 64), 5, 5 + 3 * t, 10) for t in range(5)]}
    pred = {"1": [square((48, 64), 5, 5 + 3 * t, 10) for t in range(4)] + [None]}
    path = tracking_gif(frames, gt, pred, tmp_path / "clip.gif", labels={"1": "gripper #1"})
    gif = Image.open(path)
    assert gif.n_frames == 5
    assert gif.size[0] == 64 * 2 + 4 and gif.size[1] > 48


def test_loss_curves_from_dvc_plot_csvs(tmp_path):
    csv1 = tmp_path / "s1.csv"
    csv1.write_text("step,loss\n" + "".join(f"{i},{5 / (i + 1)}\n" for i in range(40)))
    out = loss_curves({"Stage 1": csv1, "Stage 2": tmp_path / "missing.csv"}, tmp_path / "loss.png")
    assert out is not None and Image.open(out).size[0] > 100
    assert loss_curves({"x": tmp_path / "missing.csv"}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
