"""Command line of ``factory_sam3.predict`` (``python -m factory_sam3.predict --help``)."""

from __future__ import annotations

import argparse
import sys

from factory_sam3 import layout
from factory_sam3.errors import cli_entry

EXAMPLES = """examples:
  python -m factory_sam3.predict camera_07.mp4                      # models/stage2, the model's classes
  python -m factory_sam3.predict frames/cell_03/ --classes screw defect --score-threshold 0.4
  python -m factory_sam3.predict shots/ --model models/stage1       # a folder of images
  python -m factory_sam3.predict line.mp4 --model sam3 --checkpoint sam3.pt --classes "metal screw"

writes into --output (default predictions/<input name>/), replaced as a whole when everything succeeded:
  video:  overlay.mp4 (or overlay/NNNNN.png), ytvis_results.json + ytvis_videos.json (YouTube-VIS results,
          compressed RLE: sam3.eval.ytvis_eval / pycocotools), summary.json
  images: overlays/<image>.png, coco_results.json + coco_images.json (COCO results), summary.json
"""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m factory_sam3.predict",
        description="Find objects by class name in images and videos and follow them through the video "
        "(SAM3's detect-then-track scheme, the one `evaluate` scores).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "input",
        help="an image, a folder of images, a video file (anything OpenCV reads) or a "
        "folder of frames (numbered names: 00000.jpg, ...)",
    )
    parser.add_argument("--output", "-o", help="output folder (default: predictions/<input name>)")
    parser.add_argument(
        "--model",
        "-m",
        default=str(layout.STAGE2_MODEL),
        help="models/stage2 (default: detector + tracker), models/stage1 (images only), or sam3 "
        "(the released weights, see --checkpoint)",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="with --model sam3: a local sam3.pt or facebook/sam3 (gated: export HF_TOKEN)",
    )
    parser.add_argument(
        "--classes",
        "-c",
        nargs="+",
        metavar="NAME",
        help="class names used as text prompts (default: the model's categories)",
    )
    parser.add_argument(
        "--score-threshold",
        "-t",
        default="auto",
        help="detections below are ignored: a number in [0, 1], or auto (default): the best "
        "detection F1 on --calibration-split, SAM3's 0.5 without one",
    )
    parser.add_argument(
        "--calibration-split",
        default="data/ytvis/valid",
        help="YTVIS split for --score-threshold auto (default: data/ytvis/valid)",
    )
    parser.add_argument("--device", default="auto", help="auto (default: cuda when present), cpu, cuda, cuda:N")
    parser.add_argument(
        "--as",
        dest="kind",
        choices=("auto", "images", "video"),
        default="auto",
        help="how to read a folder: auto (numbered names = a video's frames), images or video",
    )
    parser.add_argument(
        "--keyframe-stride",
        type=int,
        default=8,
        help="video: the detector looks for objects on every N-th frame (default 8)",
    )
    parser.add_argument("--max-tracks", type=int, default=20, help="video: tracks started at most (default 20)")
    parser.add_argument(
        "--overlay",
        choices=("mp4", "png"),
        default="mp4",
        help="video overlay as overlay.mp4 (default) or overlay/NNNNN.png",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    for name in ("keyframe_stride", "max_tracks"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


@cli_entry
def main(argv=None) -> int:
    args = parse_args(argv)
    from factory_sam3.predict import run

    summary = run(
        args.input,
        args.output,
        args.model,
        args.classes,
        args.score_threshold,
        args.device,
        kind=args.kind,
        keyframe_stride=args.keyframe_stride,
        max_tracks=args.max_tracks,
        overlay_format=args.overlay,
        checkpoint=args.checkpoint,
        calibration_split=args.calibration_split,
        progress=not args.no_progress,
    )
    found = f"{summary['tracks']} tracks" if summary["kind"] == "video" else f"{summary['detections']} detections"
    speed = "n/a" if summary["frames_per_s"] is None else f"{summary['frames_per_s']:.2f}"
    print(
        f"predict: {summary['frames']} {'frames' if summary['kind'] == 'video' else 'images'}, {found} "
        f"(score >= {summary['score_threshold']:.3g}), {speed} frames/s end to end on {summary['device']} -> "
        f"{summary['output']}/ ({', '.join(summary['files'])})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
