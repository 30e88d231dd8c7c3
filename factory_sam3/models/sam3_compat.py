"""Compatibility fixes for the official ``sam3`` 0.1.4 wheel. ONE place for every upstream workaround.

Upstream assumes a CUDA GPU everywhere. Each code patch below is applied by :func:`apply` only when
it is needed (no CUDA), is idempotent, and has a test in tests/test_stage1_compat.py that shows the
upstream code fails without it and works with it.

Code patches (``apply()``; only without CUDA):
  ``pin_memory``     ``geometry_encoders.SequenceGeometryEncoder._encode_boxes`` calls
                     ``tensor.pin_memory()`` on every forward with box prompts/targets; without a CUDA
                     driver that raises "Found no NVIDIA driver". Pinning is meaningless without a GPU:
                     ``Tensor.pin_memory`` becomes the identity.
  ``focal_loss``     ``loss_fns.sigmoid_focal_loss`` defaults to a Triton kernel (GPU only): CPU
                     tensors take the plain PyTorch path (same formula) instead.
  ``mem_meter``      the Trainer's ``MemMeter.update`` calls ``torch.cuda.reset_peak_memory_stats()``
                     ("invalid argument" on CPU): it records 0 GB without CUDA.
  ``pos_enc``        ``PositionEmbeddingSine(precompute_resolution=...)`` allocates its cache with
                     ``device="cuda"`` in the constructor (the full-size build fails on CPU): precompute
                     on CPU instead.
  ``decoder_coords`` ``TransformerDecoder(resolution=..., stride=...)`` builds its box-RPB coordinate
                     cache with ``device="cuda"`` in the constructor: build it on CPU instead.

Settings instead of patches (the value lives in configs/stage1, chosen per device by the launcher;
:func:`device_settings` is the one place that decides them):
  ``DummyLoss(device="cuda")`` default      -> ``device: cpu`` on CPU;
  ``PostProcessImage(always_interpolate_masks_on_gpu=True)`` default -> false on CPU;
  DataLoader ``pin_memory``                 -> false on CPU;
  autocast is hard-coded to ``device_type="cuda"`` in the Trainer -> AMP (bf16) only on GPU.

Other upstream gaps handled elsewhere: the wheel lacks the BPE vocabulary (models/assets.py);
``TextTransformer`` leaves ``positional_embedding``/``text_projection`` as ``torch.empty``
(models/tiny.py ``init_text_encoder_``); validation with ``load_segmentation: true`` fails in resize,
resize ``min_size`` above the resolution and ``drop_last`` with few images give empty inputs, and
``skip_saving_ckpts`` defaults to true (training/stage1/config.py).
"""

from __future__ import annotations

import functools

import torch

PATCHES = ("pin_memory", "focal_loss", "mem_meter", "pos_enc", "decoder_coords")
_applied: set[str] = set()
_originals: dict[str, tuple[object, str, object]] = {}


def cuda_available() -> bool:
    return torch.cuda.is_available()


def device_settings(device: str) -> dict:
    """Values the Hydra config takes per device (see the module docstring)."""
    on_gpu = device == "cuda"
    return {
        "accelerator": "cuda" if on_gpu else "cpu",
        "backend": "nccl" if on_gpu else "gloo",
        "amp": on_gpu,
        "pin_memory": on_gpu,
        "interpolate_masks_on_gpu": on_gpu,
        "dummy_loss_device": "cuda" if on_gpu else "cpu",
        # CPU: torch's fused AdamW (one kernel over all tensors) makes a tiny step ~10% faster than its
        # per-tensor default; GPU: torch's default (foreach), which the GradScaler path is tested with
        "fused_optimizer": not on_gpu,
    }


_MISSING = object()


def _replace(name: str, owner: object, attr: str, new: object) -> None:
    # remember exactly what the owner itself held (an inherited method leaves nothing to restore)
    _originals[name] = (owner, attr, vars(owner).get(attr, _MISSING))
    setattr(owner, attr, new)


def _patch_pin_memory() -> None:
    def pin_memory(self, *args, **kwargs):  # identity: nothing to pin for without an accelerator
        return self

    _replace("pin_memory", torch.Tensor, "pin_memory", pin_memory)


def _patch_focal_loss() -> None:
    from sam3.train.loss import loss_fns

    original = loss_fns.sigmoid_focal_loss

    @functools.wraps(original)
    def sigmoid_focal_loss(inputs, targets, *args, **kwargs):
        if not inputs.is_cuda:
            kwargs["triton"] = False
        return original(inputs, targets, *args, **kwargs)

    _replace("focal_loss", loss_fns, "sigmoid_focal_loss", sigmoid_focal_loss)


def _patch_mem_meter() -> None:
    from sam3.train.utils.train_utils import MemMeter

    original = MemMeter.update

    @functools.wraps(original)
    def update(self, n=1, reset_peak_usage=True):
        if torch.cuda.is_available():
            return original(self, n=n, reset_peak_usage=reset_peak_usage)
        self.val = 0
        self.sum += 0
        self.count += n
        self.avg = self.sum / max(self.count, 1)

    _replace("mem_meter", MemMeter, "update", update)


def _patch_pos_enc() -> None:
    from sam3.model.position_encoding import PositionEmbeddingSine

    original = PositionEmbeddingSine.__init__

    @functools.wraps(original)
    def __init__(self, *args, precompute_resolution=None, **kwargs):
        original(self, *args, precompute_resolution=None, **kwargs)
        if precompute_resolution is not None:
            for stride in (4, 8, 16, 32):
                size = (precompute_resolution // stride, precompute_resolution // stride)
                self.forward(torch.zeros((1, 1) + size))
                self.cache[size] = self.cache[size].clone().detach()

    _replace("pos_enc", PositionEmbeddingSine, "__init__", __init__)


def _patch_decoder_coords() -> None:
    from sam3.model.decoder import TransformerDecoder

    original = TransformerDecoder._get_coords  # staticmethod, fetched as a plain function

    def _get_coords(H, W, device):
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            device = "cpu"
        return original(H, W, device)

    _originals["decoder_coords"] = (TransformerDecoder, "_get_coords", TransformerDecoder.__dict__["_get_coords"])
    TransformerDecoder._get_coords = staticmethod(_get_coords)


_PATCHERS = {
    "pin_memory": _patch_pin_memory,
    "focal_loss": _patch_focal_loss,
    "mem_meter": _patch_mem_meter,
    "pos_enc": _patch_pos_enc,
    "decoder_coords": _patch_decoder_coords,
}


def apply(only: tuple[str, ...] | None = None, force: bool = False) -> list[str]:
    """Apply the patches that this machine needs (all of them without CUDA, none with it).

    ``only`` selects patches by name; ``force`` applies them even with CUDA (tests). Returns the
    names applied by this call. Safe to call many times (each patch is applied once per process).
    """
    if cuda_available() and not force:
        return []
    done = []
    for name in only or PATCHES:
        if name not in _applied:
            _PATCHERS[name]()
            _applied.add(name)
            done.append(name)
    return done


def revert(only: tuple[str, ...] | None = None) -> None:
    """Undo patches (tests use it to show upstream fails without them)."""
    for name in list(only or PATCHES):
        if name in _applied:
            owner, attr, original = _originals.pop(name)
            if original is _MISSING:
                delattr(owner, attr)
            else:
                setattr(owner, attr, original)
            _applied.discard(name)


def applied() -> set[str]:
    return set(_applied)
