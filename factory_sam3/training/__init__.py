"""Training: Stage 1 (spatial, sam3's own Trainer: factory_sam3.training.stage1) and Stage 2 (temporal)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from factory_sam3.errors import UserError
from factory_sam3.layout import VALIDATE_REPORT


def require_validated(report: str | os.PathLike = VALIDATE_REPORT) -> None:
    """Refuse to train on data the validate stage rejected.

    DVC stops the pipeline after a failed validate, but `python stages/train_stage1.py` run on its own would
    not: a report with ``"ok": false`` stops training with its first error. No report (validate never ran,
    e.g. a hand-made dataset) is allowed.
    """
    path = Path(report)
    if not path.is_file():
        return
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"unreadable validate report ({err}); rerun `dvc repro validate`", path) from None
    if data.get("ok") is False:
        errors = data.get("errors") or []
        first = f"; first: {errors[0]}" if errors else ""
        raise UserError(
            f"the data failed validation ({len(errors)} error(s){first}); fix the data and rerun `dvc repro`", path
        )
