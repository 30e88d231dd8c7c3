"""Read ``params.yaml``: each stage reads its own section (plus shared ones such as ``model``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from factory_sam3.errors import UserError

DEFAULT_PARAMS = "params.yaml"


def load_params(path: str | os.PathLike = DEFAULT_PARAMS) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise UserError("file not found (run from the repository root or pass --params)", path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"not valid YAML: {err}", path) from None
    if not isinstance(data, dict):
        raise UserError("top level must be a mapping of stage sections", path)
    return data


def section(name: str, path: str | os.PathLike = DEFAULT_PARAMS) -> dict[str, Any]:
    """Return the ``name`` section of params.yaml, or a clear error if it is missing."""
    data = load_params(path)
    if name not in data or not isinstance(data[name], dict):
        raise UserError(f"missing section '{name}'", path)
    return data[name]


def require(params: dict[str, Any], key: str, section_name: str, kinds: type | tuple = object) -> Any:
    """Fetch ``params[key]`` and check its type, naming ``section.key`` in the error."""
    if key not in params:
        raise UserError(f"missing key '{section_name}.{key}'", DEFAULT_PARAMS)
    value = params[key]
    if not isinstance(value, kinds):
        raise UserError(f"'{section_name}.{key}' has the wrong type ({type(value).__name__})", DEFAULT_PARAMS)
    return value
