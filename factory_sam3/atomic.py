"""Write outputs to a temporary path beside the target and rename, so a killed or failed stage
never leaves a half-written output for DVC to cache."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces ``target``, on error it is removed.

    Any existing ``target`` is removed up front too, so an error never leaves the previous
    (now stale) output in place for a downstream stage to consume.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.replace(tmp, target)


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike, mode: str = "w") -> Iterator:
    """Open a temporary file beside ``target``; rename over it only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)


def write_json(target: str | os.PathLike, data: object, indent: int | None = 2) -> None:
    """Atomically write ``data`` as JSON (sorted keys so reruns are byte-identical)."""
    with atomic_file(target) as handle:
        json.dump(data, handle, indent=indent, sort_keys=True)
        handle.write("\n")
