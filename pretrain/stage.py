#!/usr/bin/env python3
"""One stage of the pretraining pipeline (pretrain/dvc.yaml): generic_data, tracker, detector or gate.

See factory_sam3/pretrain/stages.py for what each does and pretrain/params.yaml for its settings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from factory_sam3.errors import cli_entry

STAGE_NAMES = ("generic_data", "tracker", "detector", "gate")


@cli_entry
def main(argv: list[str] | None = None) -> int | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=STAGE_NAMES)
    parser.add_argument("--params", default="params.yaml", help="pretraining params file (default: %(default)s)")
    args = parser.parse_args(argv)

    from factory_sam3.pretrain.stages import STAGES

    return STAGES[args.stage](Path(args.params).resolve())


if __name__ == "__main__":
    sys.exit(main())
