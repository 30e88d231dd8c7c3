#!/usr/bin/env python3
"""to_ytvis: extracted frames + keyframe annotations -> YTVIS video instance splits for Stage 2.

Reads data/raw, data/frames and data/splits.json (from to_coco) relative to the current directory and
writes data/ytvis/<split>/annotations.json with the frames beside it. Settings: the `to_ytvis` section of
params.yaml (min_track_frames).
"""

from __future__ import annotations

import argparse

from factory_sam3.errors import cli_entry
from factory_sam3.params import section


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)

    from factory_sam3.data.to_ytvis import run

    summary = run(section("to_ytvis", args.params), progress=not args.no_progress)
    for split in ("train", "valid", "test"):
        s = summary[split]
        print(f"{split}: {s['videos']} videos, {s['frames']} frames, {s['tracks']} tracks")
    if summary["tracks_dropped"]:
        print(f"dropped {summary['tracks_dropped']} tracks below to_ytvis.min_track_frames")


if __name__ == "__main__":
    main()
