"""Where the data comes from (the ``fetch`` stage). Every source writes the same ``data/raw`` layout
(see ``factory_sam3.layout``), so the later stages never care which one ran.

``fetch.source`` picks one of:

- ``synthetic`` (default): a deterministic factory work-cell dataset generated offline;
- ``roboflow``: a Roboflow(-100) COCO export (folder or .zip; or downloaded with ROBOFLOW_API_KEY);
- ``youtube_vos``: the YouTube-VOS layout (JPEGImages/, Annotations/, meta.json) from a folder or .zip;
- ``folder``: your own data, already in the raw layout, from a folder or .zip;
- ``s3``: the same from an ``s3://bucket/prefix`` (MinIO/Ceph via ``fetch.endpoint_url``).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

from factory_sam3 import layout
from factory_sam3.atomic import atomic_dir
from factory_sam3.errors import UserError
from factory_sam3.sources.common import dump_json

SOURCES = {
    "synthetic": "factory_sam3.sources.synthetic",
    "roboflow": "factory_sam3.sources.roboflow",
    "youtube_vos": "factory_sam3.sources.youtube_vos",
    "folder": "factory_sam3.sources.folder",
    "s3": "factory_sam3.sources.s3",
}


def fetch(params: dict[str, Any], out: str | os.PathLike = layout.RAW) -> dict:
    """Run the source named by ``params['source']`` into ``out`` atomically; returns source.json's record."""
    source = params.get("source", "synthetic")
    if source not in SOURCES:
        raise UserError(f"unknown 'fetch.source' {source!r}; use one of {sorted(SOURCES)}", "params.yaml")
    module = importlib.import_module(SOURCES[source])
    warning = unversioned_warning(params.get("path"))
    if warning:
        print(f"warning: fetch: {warning}", file=sys.stderr, flush=True)
    with atomic_dir(Path(out)) as tmp:
        record = module.fetch(params, tmp)
        if not (tmp / "categories.json").exists():
            raise UserError(f"source '{source}' produced no categories.json", out)
        dump_json(tmp / "source.json", record, indent=2)
    return record


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
    return (f"'fetch.path' {text} is read as is, not versioned by DVC: `dvc status` will not see it change and "
            f"dvc.lock does not record which version was used. Track it with {how}, then set fetch.source: "
            f"folder and fetch.path: {layout.SOURCES}/{name} (README: 'Your own data').")
