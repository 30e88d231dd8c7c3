#!/usr/bin/env python3
"""to_coco: stills + sampled annotated video frames -> COCO instance segmentation splits for Stage 1.

Reads data/raw and data/frames (relative to the current directory), writes data/coco/<split>/ and
data/splits.json. Settings: the `to_coco` section of params.yaml (sample_rate, seed, splits, workers).
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

    from factory_sam3.data.to_coco import run

    summary = run(section("to_coco", args.params), progress=not args.no_progress)
    for split in ("train", "valid", "test"):
        s = summary[split]
        print(f"{split}: {s['images']} images ({s['negatives']} negatives), {s['annotations']} annotations")
    if summary["empty_masks_dropped"]:
        print(f"dropped {summary['empty_masks_dropped']} empty masks")


if __name__ == "__main__":
    main()
