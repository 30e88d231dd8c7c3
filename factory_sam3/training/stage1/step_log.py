"""Per-step loss capture for sam3's Trainer: it plugs in as the Trainer's ``tensorboard_writer``.

The Trainer logs every train step's loss and its components (``log_scalar_frequency: 1``) through
``Logger.log(name, value, step)``. :class:`StepLogger` keeps those rows in ``<run_dir>/steps.csv``
(appended, so a resumed run continues the same file; rows from steps after the last checkpoint are
superseded by the rerun; ``cpu_s`` is the process's cumulative CPU time, for a load-independent s/step)
and prints a progress line (step, loss, ETA). Rank 0 only. The launcher reads the file back for the
DVC plot and MLflow, which also works for DDP children and SLURM jobs.
"""

from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path
from typing import Any

from factory_sam3.training.common import progress_line

STEP_LOSS_PREFIX = "Step_Losses/Losses/train_all_loss"
STEPS_FILE = "steps.csv"


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _float(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)


class StepLogger:
    """Duck-types sam3's TensorBoardLogger (log, log_dict, log_hparams, flush, close)."""

    def __init__(self, log_dir: str, total_steps: int = 0, log_freq: int = 10, stream=None):
        self.path = Path(log_dir) / STEPS_FILE
        self.total_steps = int(total_steps)
        self.log_freq = max(1, int(log_freq))
        self.stream = stream or sys.stderr
        self.enabled = _rank() == 0
        self._row: dict[str, float] = {}
        self._step: int | None = None
        self._columns: list[str] | None = None
        self._start = time.monotonic()
        self._first_step: int | None = None
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    # Trainer API -------------------------------------------------------------------------------
    def log(self, name: str, data: Any, step: int) -> None:
        # the Trainer logs a step's components (".../loss_ce") first, then its total (the prefix itself)
        if not self.enabled or not name.startswith(STEP_LOSS_PREFIX):
            return
        key = "loss" if name == STEP_LOSS_PREFIX else name[len(STEP_LOSS_PREFIX) + 1 :]
        if "_aux_" in key:
            return  # per-decoder-layer copies: too many columns, same information
        if self._step != int(step):
            self._row, self._step = {}, int(step)
        self._row[key] = _float(data)
        if key == "loss":
            self._flush_row()

    def log_dict(self, payload: dict, step: int) -> None:
        for key, value in payload.items():
            self.log(key, value, step)

    def log_hparams(self, hparams: dict, meters: dict) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    # internals ---------------------------------------------------------------------------------
    def _flush_row(self) -> None:
        if self._step is None or "loss" not in self._row:
            return  # components wait for their step's total
        # process CPU seconds (cumulative): the step cost a quiet core would see, whatever the load
        row = {"step": self._step, **self._row, "cpu_s": round(time.process_time(), 3), "wall_s": round(time.time(), 3)}
        new_file = not self.path.exists() or self.path.stat().st_size == 0
        if self._columns is None:
            if new_file:
                self._columns = list(row)
            else:
                with self.path.open() as handle:
                    self._columns = next(csv.reader(handle))
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self._columns, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(row)
        self._progress(self._step, row["loss"])
        self._row = {}
        self._step = None

    def _progress(self, step: int, loss: float) -> None:
        if self._first_step is None:
            self._first_step, self._start = step, time.monotonic()
        done = step + 1
        if done % self.log_freq and done != self.total_steps:
            return
        elapsed = time.monotonic() - self._start
        rate = elapsed / max(1, step - self._first_step) if step > self._first_step else 0.0
        print(
            progress_line("train_stage1", done, self.total_steps, rate, f"loss {loss:.4f}"),
            file=self.stream,
            flush=True,
        )


def read_steps(run_dir: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of steps.csv, one per step (a step rerun after resuming keeps its latest value)."""
    path = Path(run_dir) / STEPS_FILE
    if not path.exists():
        return []
    by_step: dict[int, dict[str, float]] = {}
    with path.open() as handle:
        for row in csv.DictReader(handle):
            values = {k: float(v) for k, v in row.items() if v not in (None, "")}
            by_step[int(values["step"])] = values
    return [by_step[k] for k in sorted(by_step)]
