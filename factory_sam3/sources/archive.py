"""Safe zip extraction and "folder or .zip" inputs for the fetch sources.

A member that would land outside the extraction folder (``..`` components, absolute paths, drive letters,
symbolic links) is refused before anything is written ("zip-slip"), with an error naming the archive and
the member.
"""

from __future__ import annotations

import contextlib
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from factory_sam3.errors import UserError


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":"):
        return "has an absolute path"
    if ".." in PurePosixPath(normalized).parts:
        return "has a '..' component"
    return None


def check_zip(archive: Path) -> list[zipfile.ZipInfo]:
    """All members of ``archive``, after checking every one is safe to extract."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
    except zipfile.BadZipFile as err:
        raise UserError(f"not a readable zip archive ({err})", archive) from None
    for info in members:
        reason = _unsafe_reason(info)
        if reason:
            raise UserError(
                f"member {reason} and would be written outside the extraction folder (zip-slip); refusing "
                "to extract this archive",
                archive,
                f"member '{info.filename}'",
            )
    return members


def safe_extract(archive: str | Path, target: str | Path) -> Path:
    """Extract ``archive`` into ``target`` (created), refusing unsafe members before writing anything."""
    archive, target = Path(archive), Path(target)
    members = check_zip(archive)
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    with zipfile.ZipFile(archive) as zf:
        for info in members:
            destination = (root / info.filename.replace("\\", "/")).resolve()
            # belt and braces: the resolved path must stay inside the target
            if destination != root and root not in destination.parents:
                raise UserError(
                    "member would be written outside the extraction folder (zip-slip)",
                    archive,
                    f"member '{info.filename}'",
                )
            if info.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(destination, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                raise UserError(f"cannot extract member ({err})", archive, f"member '{info.filename}'") from None
    return target


def find_root(folder: Path, is_root: Callable[[Path], bool]) -> Path | None:
    """``folder`` itself, or the single sub-folder chain below it (zips often wrap everything in one top
    folder), for which ``is_root`` holds."""
    current = folder
    for _ in range(4):
        if is_root(current):
            return current
        children = [p for p in current.iterdir() if not p.name.startswith((".", "__MACOSX"))]
        if len(children) != 1 or not children[0].is_dir():
            return None
        current = children[0]
    return None


@contextlib.contextmanager
def local_input(path: str | Path | None, what: str) -> Iterator[Path]:
    """Yield a local folder for ``fetch.path``: the folder itself, or a .zip extracted to a temporary folder
    that is removed afterwards."""
    if not path:
        raise UserError(f"'fetch.path' must name a folder or .zip holding the {what}")
    path = Path(path)
    if path.is_dir():
        yield path
        return
    if not path.exists():
        raise UserError(f"'fetch.path' does not exist (expected a folder or .zip with the {what})", path)
    if path.suffix.lower() != ".zip":
        raise UserError("'fetch.path' must be a folder or a .zip archive", path)
    scratch = Path(tempfile.mkdtemp(prefix="factory-sam3-unzip-"))
    try:
        yield safe_extract(path, scratch / "extracted")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
