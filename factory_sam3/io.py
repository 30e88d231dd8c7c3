"""File I/O in one place: JSON read and written the same way everywhere, and atomic outputs.

Reading: ``read_json`` / ``read_json_object`` turn a missing file or broken JSON into one UserError naming the
file (and the line). Writing: ``write_json`` (sorted keys, no timestamps: the same data gives the same bytes)
and ``atomic_dir`` / ``atomic_file``: an output is written to a temporary path beside the target and renamed,
so a killed or failed stage never leaves a half-written output for DVC to cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from factory_sam3.errors import UserError

# --------------------------------------------------------------------------- reading


def read_json(path: str | os.PathLike) -> Any:
    """The parsed JSON of ``path``; a missing, non-UTF-8 or broken file is a UserError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, IsADirectoryError):
        raise UserError("file not found", path) from None
    except json.JSONDecodeError as err:
        raise UserError(f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}", path) from None
    except UnicodeDecodeError:
        raise UserError("not a UTF-8 text file", path) from None


def read_json_object(path: str | os.PathLike, required: tuple[str, ...] = ()) -> dict:
    """``read_json`` of a file whose top level is an object holding a list under each ``required`` key."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError("top level must be a JSON object", path)
    for key in required:
        if not isinstance(data.get(key), list):
            raise UserError(f"missing list '{key}'", path)
    return data


# --------------------------------------------------------------------------- writing


def dumps_json(data: Any, indent: int | None = 2, sort_keys: bool = True) -> str:
    """The text ``write_json`` writes: ``indent=None`` is compact (no spaces), for large files."""
    separators = (",", ":") if indent is None else None
    # dumps, not dump: only the one-shot encoder runs in C (dump iterates in Python, ~10x slower)
    return json.dumps(data, indent=indent, sort_keys=sort_keys, separators=separators) + "\n"


def write_json(
    target: str | os.PathLike, data: Any, indent: int | None = 2, sort_keys: bool = True, atomic: bool = True
) -> None:
    """Write ``data`` as JSON (+ newline). ``atomic=False`` for files inside a folder that is itself written
    with ``atomic_dir`` (renamed into place as a whole; a per-file rename and fsync would only cost time)."""
    text = dumps_json(data, indent, sort_keys)
    target = Path(target)
    if atomic:
        with atomic_file(target) as handle:
            handle.write(text)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", encoding="utf-8") as handle:
        handle.write(text)


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


def load_torch_file(path: str | os.PathLike, problem: str, hint: str = "") -> Any:
    """``torch.load`` with ``weights_only=True`` on the CPU; an unreadable file (truncated, a pickle of non-tensors:
    torch raises assorted types) is one UserError naming it: ``<problem> (<error>)<hint>``."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"{problem} ({type(err).__name__}: {err}){hint}", path) from None


def file_md5(path: str | os.PathLike) -> str:
    """The md5 of a file's bytes, read in 1 MiB chunks (checkpoints are large)."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def link_or_copy(src: str | os.PathLike, dst: Path) -> None:
    """Hard-link (no extra disk, instant) and fall back to a copy across file systems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
