"""Text-prompted inference with a Stage 1 model (what evaluate and the pictures use)."""

from __future__ import annotations

from collections.abc import Sequence

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
    from sam3.model import box_ops
    from sam3.model.data_misc import FindStage, interpolate
    from sam3.model.sam3_image_processor import Sam3Processor

    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image = image.convert("RGB")
    prompts = list(prompts)
    if not prompts:
        return []
    device = next(model.parameters()).device
    resolution = int(getattr(model, "resolution_px", 1008))
    processor = Sam3Processor(model, resolution=resolution, device=str(device), confidence_threshold=score_threshold)
    state = processor.set_image(image)  # the image trunk runs once
    # All prompts in one grounding pass, as sam3's Trainer batches the queries of one image: query i reads
    # image 0 with text i (FindStage img_ids / text_ids), instead of one pass per prompt (Sam3Processor).
    n = len(prompts)
    state["backbone_out"].update(model.backbone.forward_text(prompts, device=device))
    find = FindStage(
        img_ids=torch.zeros(n, dtype=torch.long, device=device),
        text_ids=torch.arange(n, dtype=torch.long, device=device),
        input_boxes=None,
        input_boxes_mask=None,
        input_boxes_label=None,
        input_points=None,
        input_points_mask=None,
    )
    out = model.forward_grounding(
        backbone_out=state["backbone_out"],
        find_input=find,
        find_target=None,
        geometric_prompt=model._get_dummy_prompt(n),
    )
    # score = query prob x presence prob, boxes and masks at the image's size, as Sam3Processor does
    scores = (out["pred_logits"].sigmoid() * out["presence_logit_dec"].sigmoid().unsqueeze(1)).squeeze(-1)
    scores = scores.float().cpu()
    width, height = image.size
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    results = []
    for i, prompt in enumerate(prompts):
        keep = torch.nonzero(scores[i] > score_threshold).flatten()
        keep = keep[torch.argsort(scores[i, keep], descending=True)]
        if max_detections is not None:
            keep = keep[:max_detections]
        if keep.numel() == 0:
            continue
        boxes = box_ops.box_cxcywh_to_xyxy(out["pred_boxes"][i, keep].float().cpu()) * scale
        masks = (
            interpolate(
                out["pred_masks"][i, keep].unsqueeze(1), (height, width), mode="bilinear", align_corners=False
            ).sigmoid()
            > 0.5
        )
        masks = masks.cpu()
        for j, q in enumerate(keep.tolist()):
            results.append((prompt, float(scores[i, q]), masks[j, 0].numpy().astype(bool), boxes[j].tolist()))
    results.sort(key=lambda r: -r[1])
    return results
