"""SAM3's tracker on a Stage 2 model, followed one frame at a time (the tracker side of ``vis``).

``factory_sam3.models.video.track`` tracks a whole clip it holds in memory; a camera video does not fit
there. ``OnlineTracker`` runs the same tracking step (``video_memory.track_frame``: memory attention over the
conditioning frames, the last ``num_maskmem - 1`` frames and the object pointers) as frames arrive, computing
each frame's features once and keeping only the memory the step can still read, so memory is bounded
whatever the video's length. Each object is its own batch of one, so any object can be (re)prompted on any
frame; on the same prompts its masks equal ``track``'s (checked by the tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from factory_sam3.models import video_memory as vm
from factory_sam3.models.video import preprocess_frames, track
from factory_sam3.models.video.predict import _autocast

UNKNOWN_LENGTH = 1 << 30  # videos streamed without a frame count: the pointer window is full-size


@dataclass
class _Object:
    start: int  # frame of the first prompt (the object's frame 0)
    num_frames: int  # frames from ``start`` to the end of the video
    cond: dict[int, vm.FrameOutput] = field(default_factory=dict)
    prev: dict[int, vm.FrameOutput] = field(default_factory=dict)


class OnlineTracker:
    """``propagate(frame)`` -> masks of every prompted object on it; ``prompt(obj, mask)`` anchors an object
    on the current frame (a new object, or a matched detection re-anchoring one); ``end(obj)``."""

    def __init__(self, model, num_frames: int | None = None):
        self.model = model
        self.tracker = model.tracker
        self.device = next(model.parameters()).device
        self.size = model.image_size
        self.total = num_frames
        self.objects: dict[Any, _Object] = {}
        self.t = -1
        self.frame: np.ndarray | None = None
        self._features = None
        # the step reads at most num_maskmem - 1 previous frames and max_obj_ptrs_in_encoder - 1 pointers
        self.window = max(self.tracker.num_maskmem, self.tracker.max_obj_ptrs_in_encoder)

    def _frame_features(self):
        if self._features is None:
            images = preprocess_frames([self.frame], self.size, self.device)
            self._features = vm.clip_features(self.model, images)
        return self._features

    def _to_frame(self, out: vm.FrameOutput) -> np.ndarray:
        h, w = self.frame.shape[:2]
        logits = F.interpolate(out.masks.float(), size=(h, w), mode="bilinear", align_corners=False)
        return (logits[0, 0] > 0).cpu().numpy()

    def _forget_old(self, state: _Object, k: int) -> None:
        for old in [i for i in state.prev if i < k - self.window]:
            del state.prev[old]
        # conditioning frames: the first and the most recent max_cond_frames_in_attn are all the step selects
        keep = self.tracker.max_cond_frames_in_attn
        conds = sorted(state.cond)
        for old in conds[1:-keep] if keep > 0 else []:
            if old < k - self.window:
                del state.cond[old]

    @torch.no_grad()
    def propagate(self, frame: np.ndarray) -> dict[Any, np.ndarray]:
        self.t += 1
        self.frame = np.asarray(frame)
        self._features = None
        out = {}
        if not self.objects:
            return out
        with _autocast(self.device):
            feats = self._frame_features()
            for obj, state in self.objects.items():
                k = self.t - state.start
                f, p = feats.frame(0, 1)
                step = vm.track_frame(
                    self.tracker,
                    f,
                    p,
                    k,
                    is_cond=False,
                    cond_outputs=state.cond,
                    prev_outputs=state.prev,
                    num_frames=state.num_frames,
                )
                state.prev[k] = step
                self._forget_old(state, k)
                out[obj] = self._to_frame(step)
        return out

    @torch.no_grad()
    def prompt(self, obj: Any, mask: np.ndarray) -> np.ndarray:
        if self.frame is None:
            raise ValueError("prompt before the first frame")
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != self.frame.shape[:2]:
            raise ValueError(f"object {obj}: mask shape {mask.shape} differs from the frame {self.frame.shape[:2]}")
        state = self.objects.get(obj)
        if state is None:
            total = self.total if self.total is not None else UNKNOWN_LENGTH
            state = self.objects[obj] = _Object(self.t, max(1, total - self.t))
        k = self.t - state.start
        with _autocast(self.device):
            f, p = self._frame_features().frame(0, 1)
            prompt = vm.resize_masks(torch.from_numpy(mask)[None, None].to(self.device), self.size) > 0.5
            step = vm.track_frame(
                self.tracker,
                f,
                p,
                k,
                is_cond=True,
                cond_outputs=state.cond,
                prev_outputs=state.prev,
                num_frames=state.num_frames,
                mask_inputs=prompt,
            )
        state.prev.pop(k, None)
        state.cond[k] = step
        self._forget_old(state, k)
        return self._to_frame(step)

    def end(self, obj: Any) -> None:
        self.objects.pop(obj, None)


class ModelTracker:
    """A Stage 2 video model as evaluate's ``Track`` (``tracker(frames, prompts)``, semi-supervised, whole
    clip) that also opens online sessions for ``vis``."""

    def __init__(self, video_model):
        self.model = video_model

    def __call__(self, frames, prompts):
        return track(self.model, list(frames), dict(prompts))

    def session(self, num_frames: int | None = None) -> OnlineTracker:
        self.model.eval()
        return OnlineTracker(self.model, num_frames)
