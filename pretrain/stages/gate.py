#!/usr/bin/env python3
"""pretrain gate: see factory_sam3/pretrain/stages.py (gate) and pretrain/params.yaml."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from factory_sam3.errors import cli_entry  # noqa: E402


@cli_entry
def main(argv: list[str] | None = None) -> int | None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="pretraining params file (default: %(default)s)")
    args = parser.parse_args(argv)

    from factory_sam3.pretrain import stages

    return stages.gate(Path(args.params).resolve())


if __name__ == "__main__":
    sys.exit(main())
