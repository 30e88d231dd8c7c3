"""Text-prompted inference with a Stage 1 model (what evaluate and the pictures use)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image


@torch.inference_mode()
def predict_image(
    model: torch.nn.Module,
    image: Image.Image | np.ndarray,
    prompts: Sequence[str],
    score_threshold: float = 0.5,
    max_detections: int | None = 100,
) -> list[tuple[str, float, np.ndarray, list[float]]]:
    """Detect and segment every instance of each text prompt in one image.

    Args:
        model: a Sam3Image in eval mode (``load_stage1`` or ``build_image_model``).
        image: PIL image or HxWx3 uint8 array (RGB).
        prompts: category names, e.g. ``["gripper", "screw"]``; each is one text query.
        score_threshold: keep detections whose score (query prob x presence prob, as sam3's
            Sam3Processor) is above it; 0 keeps all queries.
        max_detections: keep at most this many per prompt, highest score first.
    Returns:
        ``(category, score, mask, box)`` tuples sorted by score: ``mask`` is an HxW bool array at the
        image's size, ``box`` is ``[x0, y0, x1, y1]`` in pixels.
    """
    from sam3.model.sam3_image_processor import Sam3Processor

    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image = image.convert("RGB")
    device = next(model.parameters()).device
    resolution = int(getattr(model, "resolution_px", 1008))
    processor = Sam3Processor(model, resolution=resolution, device=str(device),
                              confidence_threshold=score_threshold)
    state = processor.set_image(image)
    results = []
    for prompt in prompts:
        processor.reset_all_prompts(state)
        state = processor.set_text_prompt(prompt, state)
        scores = state["scores"].float().cpu()
        order = torch.argsort(scores, descending=True)
        if max_detections is not None:
            order = order[:max_detections]
        masks = state["masks"].cpu()
        boxes = state["boxes"].float().cpu()
        for i in order.tolist():
            results.append((prompt, float(scores[i]), masks[i, 0].numpy().astype(bool), boxes[i].tolist()))
    results.sort(key=lambda r: -r[1])
    return results
