"""User-facing errors: every bad input ends in one clear line, a non-zero exit, no traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem with the user's input or settings (not a bug in this project).

    The message names the file, the record and the problem, e.g.
    ``data/coco/train/_annotations.coco.json: annotation 17: bbox outside the image``.
    """

    def __init__(self, problem: str, file: object = None, record: object = None):
        self.problem = problem
        self.file = None if file is None else str(file)
        self.record = None if record is None else str(record)
        super().__init__(self.message)

    @property
    def message(self) -> str:
        parts = [p for p in (self.file, self.record) if p]
        return ": ".join(parts + [self.problem])


def warn(message: str) -> None:
    """A problem worth knowing that does not stop the stage: one ``warning: ...`` line on stderr, no traceback."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


EXIT_USER_ERROR = 2


def cli_entry(main: Callable[..., object]) -> Callable[..., object]:
    """Decorate a stage's ``main`` so a UserError prints ``error: ...`` and exits 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err.message}", file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper
