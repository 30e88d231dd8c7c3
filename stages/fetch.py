#!/usr/bin/env python3
"""DVC stage `fetch`: get the raw data (params.yaml section `fetch`) into data/raw.

fetch.source: synthetic (default, generated offline) | roboflow | youtube_vos | folder | s3
fetch.path:   folder, .zip or s3://bucket/prefix for the non-synthetic sources
Paths are relative to the current directory. The output is written to a temporary folder and renamed.
"""

from __future__ import annotations

import argparse
import sys

from factory_sam3 import layout
from factory_sam3.errors import cli_entry
from factory_sam3.params import DEFAULT_PARAMS, section


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=DEFAULT_PARAMS, help="params file (default: %(default)s)")
    parser.add_argument("--out", default=str(layout.RAW), help="output folder (default: %(default)s)")
    return parser.parse_args(argv)


@cli_entry
def main(argv=None) -> None:
    args = parse_args(argv)
    params = section("fetch", args.params)
    from factory_sam3.sources import fetch

    record = fetch(params, args.out)
    print(f"fetch: {record['source']} -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
