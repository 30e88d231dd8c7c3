#!/usr/bin/env python3
"""validate: check data/coco and data/ytvis; write reports/validate.json; exit non-zero on any error.

Errors (training would crash or learn garbage) name the file, the record id and the problem; warnings
(class balance, share of negatives) are reported only. Settings: the `validate` section of params.yaml.
"""

from __future__ import annotations

import argparse
import sys

from factory_sam3.errors import UserError, cli_entry
from factory_sam3.params import section

SHOWN_ERRORS = 20


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)

    from factory_sam3.atomic import write_json
    from factory_sam3.data.validate import run
    from factory_sam3.layout import VALIDATE_REPORT

    # a report from an earlier run must not outlive a failure of this one (bad params included)
    VALIDATE_REPORT.unlink(missing_ok=True)
    report = run(section("validate", args.params), progress=not args.no_progress)
    # written atomically whether or not it passes: a failed run leaves an "ok": false report, never a stale
    # passing one, and the non-zero exit below stops dvc before any training stage
    write_json(VALIDATE_REPORT, report.as_dict())
    for line in report.warnings:
        print(f"warning: {line}", file=sys.stderr)
    totals = report.stats["totals"]
    print(
        f"{totals['images']} images, {totals['annotations']} annotations, {totals['videos']} videos, "
        f"{totals['tracks']} tracks; {len(report.errors)} errors, {len(report.warnings)} warnings -> {VALIDATE_REPORT}"
    )
    if report.errors:
        for line in report.errors[:SHOWN_ERRORS]:
            print(f"error: {line}", file=sys.stderr)
        more = len(report.errors) - SHOWN_ERRORS
        if more > 0:
            print(f"... and {more} more", file=sys.stderr)
        raise UserError(f"{len(report.errors)} error(s) found; all are listed in the report", VALIDATE_REPORT)


if __name__ == "__main__":
    main()
