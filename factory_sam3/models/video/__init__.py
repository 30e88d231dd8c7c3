"""SAM3's video model for Stage 2: the detector (image model) plus sam3's tracker, in two profiles.

``tiny``: the Stage 1 tiny image model (``factory_sam3.models.tiny``) as detector, with the tracker neck
(``sam2_convs``) added as upstream does (a copy of the detector neck), and sam3's tracker classes — memory
encoder (``SimpleMaskEncoder``), memory attention (``TransformerEncoderCrossAttention`` of RoPE layers), SAM
prompt encoder + mask decoder, object pointers — at small dimensions (``TinyTrackerConfig``), random init.
``sam3``: the full-size detector and tracker exactly as ``sam3.model_builder.build_sam3_video_model`` builds
them (same modules, same state-dict keys), GPU.

The model is a plain container ``Sam3VideoModel`` with ``.detector`` and ``.tracker``, so its state dict is
``detector.*`` + ``tracker.*`` — the layout of the official SAM3 checkpoint, which
``build_sam3_video_model(checkpoint_path=..., load_from_HF=False)`` loads strictly for the ``sam3`` profile.
The tracker is ``Sam3TrainableTracker``, a ``Sam3TrackerBase`` subclass that adds no parameter; we never build
``Sam3TrackerPredictor`` here (its constructor enters a process-wide CUDA autocast context).

Inference API (semi-supervised VOS, used by evaluation)::

    from factory_sam3.models.video import load_stage2, track
    model = load_stage2("models/stage2")                 # profile read from models/stage2/config.json
    masks = track(model, frames, {obj_id: (first_frame_idx, first_mask)})
    # frames: list of HxWx3 uint8 RGB arrays (one video, in time order)
    # first_masks: obj_id -> (index of the frame it is first given on, HxW bool mask on that frame)
    # returns obj_id -> list of HxW bool masks, one per frame (all False before the prompt frame)

Each object is prompted with its mask on its own frame and propagated forward with memory (objects prompted
on the same frame share one memory bank; all objects in flight go through the SAM heads as one batch, in one pass
over the video). Frames are resized to the model's square resolution,
outputs resized back to HxW.
"""

# split by job: build.py (the model), checkpoint.py (weights in and out), predict.py (inference)
from factory_sam3.models.video.build import (
    IMAGE_MEAN,
    IMAGE_STD,
    PROFILES,
    STAGE2_CONFIG,
    STAGE2_WEIGHTS,
    TINY_TRACKER,
    Sam3VideoModel,
    TinyTrackerConfig,
    build_full_detector,
    build_full_tracker,
    build_tiny_tracker,
    build_video_model,
    tracker_class,
)
from factory_sam3.models.video.checkpoint import (
    export_state_dict,
    init_from_checkpoints,
    load_stage2,
    save_stage2,
    split_stage1_state,
    stage1_weights_file,
    starting_checkpoint,
)
from factory_sam3.models.video.predict import preprocess_frames, track

__all__ = [
    "preprocess_frames",
    "track",
    "IMAGE_MEAN",
    "IMAGE_STD",
    "PROFILES",
    "STAGE2_CONFIG",
    "STAGE2_WEIGHTS",
    "TINY_TRACKER",
    "Sam3VideoModel",
    "TinyTrackerConfig",
    "build_full_detector",
    "build_full_tracker",
    "build_tiny_tracker",
    "build_video_model",
    "tracker_class",
    "export_state_dict",
    "init_from_checkpoints",
    "load_stage2",
    "save_stage2",
    "split_stage1_state",
    "stage1_weights_file",
    "starting_checkpoint",
]
