"""SAM3 models for the pipeline: two profiles of the same architecture, one API.

    from factory_sam3.models import build_image_model, load_stage1, predict_image
    model = load_stage1("models/stage1")          # eval mode, ready for inference
    for category, score, mask, box in predict_image(model, pil_image, ["gripper", "screw"]):
        ...                                       # mask: HxW bool numpy, box: [x0, y0, x1, y1] px

Profiles (params.yaml ``model.profile``): ``tiny`` (factory_sam3.models.tiny.TINY_CONFIG: SAM3's own
classes at ~4.8M params, 224 px, random init, CPU) and ``sam3`` (full size, weights from
``model.checkpoint``). sam3 0.1.4 workarounds live in factory_sam3.models.sam3_compat.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = [
    "build_image_model",
    "load_stage1",
    "predict_image",
    "export_stage1",
    "resolve_checkpoint",
    "TINY_CONFIG",
]

if TYPE_CHECKING:  # pragma: no cover
    from factory_sam3.models.build import build_image_model, resolve_checkpoint
    from factory_sam3.models.export import export_stage1, load_stage1
    from factory_sam3.models.predict import predict_image
    from factory_sam3.models.tiny import TINY_CONFIG


def __getattr__(name: str):
    # lazy: importing sam3 costs seconds; `import factory_sam3.models` stays cheap
    if name in ("build_image_model", "resolve_checkpoint"):
        from factory_sam3.models import build as module
    elif name in ("export_stage1", "load_stage1"):
        from factory_sam3.models import export as module
    elif name == "predict_image":
        from factory_sam3.models import predict as module
    elif name == "TINY_CONFIG":
        from factory_sam3.models import tiny as module
    else:
        raise AttributeError(name)
    return getattr(module, name)
