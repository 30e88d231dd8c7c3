#!/usr/bin/env python3
"""DVC stage `extract_frames`: data/raw videos and frame folders -> data/frames/<video>/00000.jpg ...

Reads params.yaml section `extract_frames`: frame_interval (keep every N-th frame), max_frames_per_video,
jpeg_quality, workers (0 = one process per core), skip_bad_videos (warn and record instead of failing).
Writes data/frames/manifest.json with each kept frame's source index and timestamp. Paths are relative to
the current directory; the output is written to a temporary folder and renamed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from factory_sam3 import layout
from factory_sam3.errors import UserError, cli_entry
from factory_sam3.params import DEFAULT_PARAMS, section


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=DEFAULT_PARAMS, help="params file (default: %(default)s)")
    parser.add_argument("--raw", default=str(layout.RAW), help="input folder (default: %(default)s)")
    parser.add_argument("--out", default=str(layout.FRAMES), help="output folder (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


@cli_entry
def main(argv=None) -> None:
    args = parse_args(argv)
    params = section("extract_frames", args.params)
    from factory_sam3.data.frames import Settings, extract_all

    settings = Settings.from_params(params, args.params)
    workers = params.get("workers", 0)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise UserError(f"'extract_frames.workers' must be 0 (one per core) or a positive integer, got {workers!r}",
                        args.params)
    skip_bad = params.get("skip_bad_videos", False)
    if not isinstance(skip_bad, bool):
        raise UserError(f"'extract_frames.skip_bad_videos' must be true or false, got {skip_bad!r}", args.params)
    manifest = extract_all(Path(args.raw), Path(args.out), settings, workers, skip_bad, progress=not args.no_progress)
    videos = manifest["videos"].values()
    kept = sum(len(v["frames"]) for v in videos)
    skipped = sum(v["status"] != "ok" for v in videos)
    print(f"extract_frames: {kept} frames from {len(manifest['videos']) - skipped} videos -> {args.out}"
          + (f" ({skipped} skipped)" if skipped else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
