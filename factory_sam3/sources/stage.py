"""DVC stage `fetch`: get the raw data (params.yaml section `fetch`) into data/raw.

fetch.source: synthetic (default, generated offline) | roboflow | youtube_vos | folder | s3
fetch.path:   folder, .zip or s3://bucket/prefix for the non-synthetic sources
Every source writes the same data/raw layout (factory_sam3.layout). Paths are relative to the current
directory. The output is written to a temporary folder and renamed.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path

from factory_sam3 import layout
from factory_sam3.cli import stage_main
from factory_sam3.config import Invalid, ensure
from factory_sam3.errors import UserError, warn
from factory_sam3.io import atomic_dir, write_json
from factory_sam3.sources import SOURCES
from factory_sam3.sources.synthetic import SyntheticParams

STAGE = "fetch"


@dataclass(frozen=True)
class Params:
    """params.yaml section ``fetch``."""

    source: str  # a key of SOURCES
    path: str | None  # folder, .zip, s3://bucket/prefix or Roboflow workspace/project/version
    endpoint_url: str | None  # S3-compatible store
    seed: int
    synthetic: SyntheticParams

    def check(self) -> None:
        if self.source not in SOURCES:
            raise Invalid("source", f"is unknown: {self.source!r}; use one of {sorted(SOURCES)}")
        if self.source != "synthetic" and not self.path:
            raise Invalid("path", f"must name the data for fetch.source {self.source} (folder, .zip or s3://...)")
        if self.source == "s3":
            from factory_sam3.sources.s3 import url_problem

            problem = url_problem(self.path)
            if problem:
                raise Invalid("path", problem)


def run(params: Params, out: Path = layout.RAW) -> dict:
    """Run the source named by ``params.source`` into ``out`` atomically; returns source.json's record."""
    params = ensure(Params, params, STAGE)
    module = importlib.import_module(SOURCES[params.source])
    warning = unversioned_warning(params.path)
    if warning:
        warn(f"fetch: {warning}")
    with atomic_dir(Path(out)) as tmp:
        record = module.fetch(params, tmp)
        if not (tmp / layout.RAW_CATEGORIES).exists():
            raise UserError(f"source '{params.source}' produced no {layout.RAW_CATEGORIES}", out)
        write_json(tmp / layout.RAW_SOURCE_RECORD, record, indent=2, atomic=False)
    return {**record, "out": str(out)}


def show(summary: dict) -> None:
    print(f"fetch: {summary['source']} -> {summary['out']}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    stage_main(STAGE, __doc__, Params, run, show, argv, paths={"out": layout.RAW}, progress=False)


def unversioned_warning(path: object) -> str | None:
    """Why ``fetch.path`` is not versioned (None when it is under data/sources/, which fetch depends on)."""
    if not path:
        return None
    text = str(path)
    name = Path(text.rstrip("/")).name or "mydata"
    if "://" not in text:
        if not Path(text).exists():  # e.g. a Roboflow workspace/project/version id; the source explains
            return None
        resolved = Path(text).resolve()
        if resolved == layout.SOURCES.resolve() or layout.SOURCES.resolve() in resolved.parents:
            return None
        how = f"`dvc import-url {resolved} {layout.SOURCES}/{name}`"
    else:
        how = f"`dvc import-url {text} {layout.SOURCES}/{name}`"
        if text.startswith("s3://"):
            how += " (add `--fs-config endpointurl=URL` for MinIO/Ceph)"
    return (
        f"'fetch.path' {text} is read as is, not versioned by DVC: `dvc status` will not see it change and "
        f"dvc.lock does not record which version was used. Track it with {how}, then set fetch.source: "
        f"folder and fetch.path: {layout.SOURCES}/{name} (README: 'Your own data')."
    )
