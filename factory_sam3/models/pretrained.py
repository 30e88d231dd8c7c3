"""The profiles' starting weights: what Stage 1 and Stage 2 fine-tune and what `evaluate` calls `baseline`.

``sam3``: the released SAM3 checkpoint (``model.checkpoint``: a local .pt or the gated hub id, HF_TOKEN).
``tiny``: ``models/pretrained/tiny_sam3.pt``, made by our own pretraining pipeline (``pretrain/dvc.yaml``, see
the README) and committed to git: a full SAM3 video-model state dict (``detector.*`` + ``tracker.*``, the
layout of the released checkpoint) in float16, beside ``tiny_sam3.json`` (the tiny dimensions it was made
with and the pretraining gate's report). A fresh clone uses it as is; nothing is downloaded.

    from factory_sam3.models.pretrained import tiny_state, TINY_WEIGHTS
    state = tiny_state()          # float32 tensors, 'detector.*' + 'tracker.*'

A missing, truncated or mismatched file is one ``UserError`` naming it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from factory_sam3.errors import UserError
from factory_sam3.io import load_torch_file
from factory_sam3.layout import REPO_ROOT

TINY_WEIGHTS = REPO_ROOT / "models" / "pretrained" / "tiny_sam3.pt"
TINY_INFO = TINY_WEIGHTS.with_suffix(".json")
# tests and benchmarks that need the untrained model (e.g. to measure what pretraining adds) set this
RANDOM_INIT_ENV = "FACTORY_SAM3_TINY_RANDOM_INIT"

_CACHE: dict[tuple, dict] = {}


WEIGHTS_ENV = "FACTORY_SAM3_TINY_WEIGHTS"  # another weights file (tests, experiments)
_WARNED: list[bool] = []


def tiny_weights_path() -> Path:
    return Path(os.environ.get(WEIGHTS_ENV, TINY_WEIGHTS))


def shipped() -> bool:
    """Whether the repository ships tiny starting weights: ``tiny_sam3.json`` is committed with them (the
    pretraining gate writes both or neither), so a missing or broken ``.pt`` beside it is an error."""
    return WEIGHTS_ENV in os.environ or TINY_INFO.is_file() or TINY_WEIGHTS.is_file()


def use_random_init() -> bool:
    """True when the tiny profile starts from random weights: asked for (``FACTORY_SAM3_TINY_RANDOM_INIT=1``,
    pretraining itself), or no weights ship because pretraining has not passed its gate yet (a warning says so)."""
    if os.environ.get(RANDOM_INIT_ENV, "") not in ("", "0", "false"):
        return True
    if shipped():
        return False
    if not _WARNED:
        _WARNED.append(True)
        print(
            "warning: models/pretrained/tiny_sam3.pt is not in this repository (pretraining has not passed its "
            "gate, see pretrain/metrics/gate.json): the tiny profile starts from random weights",
            file=sys.stderr,
        )
    return True


def tiny_info(path: Path | None = None) -> dict:
    path = Path(path or tiny_weights_path()).with_suffix(".json")
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"invalid JSON ({err.msg} at line {err.lineno})", path) from None


def tiny_state(path: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """The tiny starting weights as float32 (cached per file and modification time)."""
    path = Path(path or tiny_weights_path())
    if not path.is_file():
        raise UserError(
            "the tiny profile's pretrained starting weights are missing (they ship with the "
            "repository; restore them with `git checkout -- models/pretrained` or remake them with "
            "`make pretrain`)",
            path,
        )
    key = (str(path.resolve()), path.stat().st_mtime_ns, path.stat().st_size)
    if key not in _CACHE:
        state = load_torch_file(
            path,
            "cannot read the tiny starting weights",
            "; the file is truncated or not a PyTorch state dict: restore it with `git checkout -- models/pretrained`",
        )
        if (
            not isinstance(state, dict)
            or not any(k.startswith("tracker.") for k in state)
            or not any(k.startswith("detector.") for k in state)
        ):
            raise UserError("not a SAM3 video-model state dict (expected 'detector.*' and 'tracker.*' keys)", path)
        _CACHE.clear()
        _CACHE[key] = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    return _CACHE[key]


def fit_resolution(part: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights made at one input resolution for a model built at another (e.g. tests at 112 px): the ViT's absolute
    position embedding is resampled to the model's patch grid (as ViTDet / timm load at a new size) and the RoPE
    tables (``*freqs_cis``, fixed functions of the grid, not learned) are the model's own."""
    import torch.nn.functional as F

    fitted = dict(part)
    for key, value in part.items():
        target = own.get(key)
        if target is None or target.shape == value.shape:
            continue
        if key.endswith("freqs_cis"):
            fitted[key] = target
        elif key.endswith("pos_embed") and value.dim() == 3 and target.dim() == 3:
            cls = value.shape[1] - int((value.shape[1]) ** 0.5) ** 2  # 1 with a class token, 0 without
            side, new_side = int((value.shape[1] - cls) ** 0.5), int((target.shape[1] - cls) ** 0.5)
            grid = value[:, cls:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(new_side, new_side), mode="bicubic", align_corners=False)
            fitted[key] = torch.cat([value[:, :cls], grid.permute(0, 2, 3, 1).reshape(1, new_side**2, -1)], 1)
    return fitted


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], prefix: str, source: Path) -> None:
    """Strictly load the ``prefix``-ed part of ``state`` into ``module``; a mismatch names the file."""
    part = fit_resolution({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, module.state_dict())
    try:
        module.load_state_dict(part, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        detail = " ".join(line.strip() for line in str(err).splitlines()[1:3])
        raise UserError(
            f"the tiny starting weights do not fit the tiny model ({first} {detail[:300]}); they were "
            "made for other tiny dimensions: remake them with `make pretrain`",
            source,
        ) from None
