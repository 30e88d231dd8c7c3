"""Where each stage reads and writes. One place for the paths and on-disk layouts that stages share.

data/raw/  (fetch; every source is normalised to this layout)
    categories.json              [{"id": 1, "name": "gripper", "supercategory": "tool"}, ...]
    source.json                  {"source": "synthetic", ...}  what was fetched, for the record
    videos/<video>.mp4           camera videos (any container OpenCV decodes: .mp4 .avi .mov .mkv)
    frame_folders/<video>/*.jpg  sources that ship frames instead of videos (YouTube-VOS), sorted by name
    video_annotations/<video>.json
        {"video": "<video>", "width": W, "height": H, "num_frames": N,
         "tracks": {"<track_id>": {"category": "gripper"}},
         "frames": {"<source_frame_index>": {"<track_id>": <RLE {"size":[H,W],"counts":str} or polygon list>}}}
        Frame indices are indices into the source video (or into the sorted frame folder). Only annotated
        frames appear (sparse keyframes are fine); an annotated frame with no tracks ({}) is a negative.
    images/<image>.jpg           still images (guide Script 1 layout) ...
    masks/<image>_<class>.png    ... with one binary mask per class present (L-mode PNG, >127 = object)
    image_annotations/<image>.json  alternative to masks/ for instance-level stills (Roboflow exports):
        {"width": W, "height": H, "instances": [{"category": "screw", "segmentation": <RLE or polygons>}]}
    groups.json (optional)       {"<image>": "<group>"}: stills that must share a split (same camera/session)
    splits.json (optional)       {"<video or image>": "train|valid|test"}: splits fixed by the source (Roboflow)

data/frames/  (extract_frames)
    <video>/00000.jpg ...        every frame_interval-th frame, renumbered from 0
    manifest.json                {"videos": {"<video>": {"source": "videos/<video>.mp4", "status": "ok"|"skipped",
                                  "error": str|None, "fps": f, "frames": [{"file": "00000.jpg",
                                  "source_index": k, "timestamp": seconds}]}}}

data/splits.json  (to_coco)      {"<video or image>": "train"|"valid"|"test"} for every group; to_ytvis reuses it
data/coco/<split>/_annotations.coco.json + the split's images beside it (split in train, valid, test)
data/ytvis/<split>/annotations.json + <video>/00000.jpg ... beside it
reports/validate.json  (validate)
models/stage1/, models/stage2/  (train_stage1, train_stage2: the exports)
metrics/<stage>.json, plots/<stage>_loss.csv  (DVC metrics and plots of the training and evaluate stages)
reports/evaluate/, reports/evaluate_details.json  (evaluate: pictures, per-class and per-video details)
runs/<stage>/<hash>/  (git-ignored scratch: resumable checkpoints and trainer logs)
"""

from pathlib import Path

# the checkout this package is installed from (editable: `pip install -e .`): for the files that live in git
# (configs/, models/pretrained/, pretrain/) wherever the process runs; the stages' own paths are relative
REPO_ROOT = Path(__file__).resolve().parents[1]

DATA = Path("data")
RAW = DATA / "raw"
# the user's own data, tracked by DVC (`dvc add` / `dvc import-url`); the fetch stage depends on the folder
SOURCES = DATA / "sources"
FRAMES = DATA / "frames"
COCO = DATA / "coco"
YTVIS = DATA / "ytvis"
SPLITS_FILE = DATA / "splits.json"
SPLITS = ("train", "valid", "test")
COCO_ANNOTATIONS = "_annotations.coco.json"
YTVIS_ANNOTATIONS = "annotations.json"
FRAMES_MANIFEST = "manifest.json"  # data/frames/manifest.json

# names inside data/raw (the layout above); factory_sam3.data.raw reads them, the sources write them
RAW_CATEGORIES = "categories.json"
RAW_SOURCE_RECORD = "source.json"
RAW_VIDEOS = "videos"
RAW_FRAME_FOLDERS = "frame_folders"
RAW_VIDEO_ANNOTATIONS = "video_annotations"
RAW_IMAGES = "images"
RAW_MASKS = "masks"
RAW_IMAGE_ANNOTATIONS = "image_annotations"
RAW_GROUPS = "groups.json"
RAW_SPLITS = "splits.json"
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")  # videos/: any container OpenCV decodes
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")  # frame_folders/ (and the sources' images)
MODELS = Path("models")
METRICS = Path("metrics")
PLOTS = Path("plots")
RUNS = Path("runs")  # git-ignored scratch: trainer logs and resumable checkpoints that outlive a killed stage
REPORTS = Path("reports")
VALIDATE_REPORT = REPORTS / "validate.json"
STAGE1_MODEL = MODELS / "stage1"
STAGE2_MODEL = MODELS / "stage2"
EVALUATE_PICTURES = REPORTS / "evaluate"
EVALUATE_DETAILS = REPORTS / "evaluate_details.json"


def metrics_file(stage: str) -> Path:
    """metrics/<stage>.json: a stage's DVC metrics."""
    return METRICS / f"{stage}.json"


def loss_plot(stage: str) -> Path:
    """plots/<stage>_loss.csv: a training stage's per-step losses (DVC plot)."""
    return PLOTS / f"{stage}_loss.csv"


def runs_dir(stage: str) -> Path:
    """runs/<stage>/: a training stage's resumable scratch."""
    return RUNS / stage


CATEGORIES = [
    {"id": 1, "name": "gripper", "supercategory": "tool"},
    {"id": 2, "name": "part_A", "supercategory": "part"},
    {"id": 3, "name": "defect", "supercategory": "quality"},
    {"id": 4, "name": "screw", "supercategory": "fastener"},
]
