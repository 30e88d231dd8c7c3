"""params.yaml, typed: one dataclass per section, one loader, one error style.

``params.yaml`` is the single source of defaults. A section's dataclass declares every key with its type and
no default, so the code never holds a second copy of a value; a key missing from the file, a key the
dataclass does not know, or a value of the wrong type is one ``UserError`` naming ``section.key`` and the
params file actually read (``--params``), never a traceback and never a silently ignored key.

Supported field types: ``int`` (not bool), ``float`` (an int is accepted and kept as written), ``bool``,
``str``, ``X | None``, ``Literal[...]``, ``list[X]``, ``dict[str, X]``, ``Any`` and a nested dataclass (a
sub-mapping such as ``fetch.synthetic``). Range checks and relations between keys go in an optional
``check(self)`` method that raises ``Invalid(key, problem)``.

Every stage reads its sections this way: the data stages (their modules), ``model`` (below), ``train_stage1``
(training/stage1/config.py), ``train_stage2`` (training/stage2/config.py), ``evaluate`` (evaluation/stage.py).
A section is declared like this::

    @dataclass(frozen=True)
    class TrainStage2Params:
        lr_scale: float
        steps: int
        freeze: list[str]
        base_lr: dict[str, float]
        resolution: int | None

        def check(self) -> None:
            if self.steps < 1:
                raise Invalid("steps", f"must be an integer >= 1, got {self.steps!r}")

    params = load_section("train_stage2", TrainStage2Params, args.params)   # or params_path()
    mlflow_params = as_params_dict("train_stage2", params)                  # {"train_stage2.steps": 100, ...}

"""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from factory_sam3.errors import UserError

# The default --params of every stage: relative to the working directory (DVC runs stages at the repo root).
PARAMS_FILE = Path("params.yaml")

T = TypeVar("T")
_FILE_ATTR = "_params_file"


class Invalid(ValueError):
    """Raised by a section's ``check()``: ``key`` (relative to the section) and what is wrong with it."""

    def __init__(self, key: str, problem: str):
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}")


# --------------------------------------------------------------------------- the shared `model` section


def device_problem(name: str) -> str | None:
    """What is wrong with a device name in params.yaml, or None: the one rule the params checks (``model``,
    ``evaluate``) and ``factory_sam3.device.resolve_device`` share."""
    if name in ("auto", "cpu", "cuda") or name.startswith("cuda:"):
        return None
    return f"must be auto, cpu, cuda or cuda:N (got {name!r})"


@dataclass(frozen=True)
class ModelParams:
    """``model``: which SAM3 the training and evaluation stages build, from which weights, on which device."""

    profile: Literal["tiny", "sam3"]
    checkpoint: str | None  # sam3 only: local .pt path or Hugging Face hub id
    device: str  # auto | cpu | cuda | cuda:N (factory_sam3.device)

    def check(self) -> None:
        problem = device_problem(self.device)
        if problem:
            raise Invalid("device", problem)


# --------------------------------------------------------------------------- the file


def load(path: str | os.PathLike = PARAMS_FILE) -> dict[str, Any]:
    """The whole params file as a mapping of sections."""
    path = Path(path)
    if not path.is_file():
        raise UserError("file not found (run from the repository root or pass --params)", path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"not valid YAML: {err}", path) from None
    if not isinstance(data, dict):
        raise UserError("top level must be a mapping of stage sections", path)
    return data


def section(name: str, path: str | os.PathLike = PARAMS_FILE) -> dict[str, Any]:
    """The ``name`` section as a plain mapping, or a clear error if it is missing."""
    return section_of(load(path), name, path)


def section_of(params: Mapping[str, Any], name: str, path: str | os.PathLike = PARAMS_FILE) -> Any:
    """The ``name`` section of an already loaded params mapping, or a clear error if it is missing."""
    if not isinstance(params.get(name), Mapping):
        raise UserError(f"missing section '{name}'", path)
    return params[name]


def typed_section(params: Mapping[str, Any], name: str, cls: type[T], path: str | os.PathLike = PARAMS_FILE) -> T:
    """The ``name`` section of an already loaded params mapping as a checked ``cls`` (one read of the file serves
    every section a stage needs)."""
    return from_mapping(cls, section_of(params, name, path), name, path)


def load_section(name: str, cls: type[T], path: str | os.PathLike = PARAMS_FILE) -> T:
    """The ``name`` section of the params file at ``path`` as a ``cls`` instance (checked)."""
    return typed_section(load(path), name, cls, path)


# --------------------------------------------------------------------------- mapping -> dataclass


def from_mapping(cls: type[T], data: Any, name: str, file: str | os.PathLike = PARAMS_FILE) -> T:
    """``cls(**data)`` with every key known, present and of the declared type, then ``check()``ed.

    ``name`` is the dotted path of the section (``fetch.synthetic``), used in the errors with ``file``."""
    if not isinstance(data, Mapping):
        raise UserError(f"'{name}' must be a mapping of keys, got {data!r}", file)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(f"unknown key '{name}.{unknown[0]}' (known: {', '.join(fields)})", file)
    missing = [
        k
        for k, f in fields.items()
        if k not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise UserError(f"missing key '{name}.{missing[0]}'", file)
    hints = get_type_hints(cls)
    values = {key: _convert(data[key], hints[key], f"{name}.{key}", file) for key in fields if key in data}
    instance = cls(**values)
    check = getattr(instance, "check", None)
    if check is not None:
        try:
            check()
        except Invalid as err:
            raise UserError(f"'{name}.{err.key}' {err.problem}", file) from None
    object.__setattr__(instance, _FILE_ATTR, str(file))
    return instance


def ensure(cls: type[T], params: T | Mapping[str, Any], name: str) -> T:
    """``params`` if it already is a ``cls``, else ``from_mapping`` (for callers that hold a plain dict)."""
    return params if isinstance(params, cls) else from_mapping(cls, params, name)


def params_file(params: object) -> str:
    """The file a section was loaded from, for errors found later (e.g. a ``fetch.path`` that is not there)."""
    return getattr(params, _FILE_ATTR, str(PARAMS_FILE))


def as_params_dict(name: str, params: object) -> dict[str, Any]:
    """``{"<section>.<key>": value}`` (nested sections dotted further): what a stage logs to MLflow."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if dataclasses.is_dataclass(value):
            for field in dataclasses.fields(value):
                walk(f"{prefix}.{field.name}", getattr(value, field.name))
        else:
            out[prefix] = value

    walk(name, params)
    return out


def _describe(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return f"one of {list(args)}"
    if origin is list:
        return f"a list of {_describe(args[0])}" if args else "a list"
    if origin in (dict, Mapping):
        return f"a mapping to {_describe(args[1])}" if args else "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping of keys"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(value: Any, tp: Any, key: str, file: object) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in args:
            if option is type(None):
                continue
            try:
                return _convert(value, option, key, file)
            except UserError:
                continue
        raise UserError(f"'{key}' must be {_describe(tp)}, got {value!r}", file)
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, key, file)
    if origin is Literal:
        ok = value in args
    elif origin is list:
        if not isinstance(value, list):
            raise UserError(f"'{key}' must be {_describe(tp)}, got {value!r}", file)
        return [_convert(v, args[0], f"{key}[{i}]", file) for i, v in enumerate(value)] if args else value
    elif origin in (dict, Mapping):
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise UserError(f"'{key}' must be {_describe(tp)}, got {value!r}", file)
        return {k: _convert(v, args[1], f"{key}.{k}", file) for k, v in value.items()} if args else value
    elif tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif tp is str:
        ok = isinstance(value, str)
    else:
        raise TypeError(f"{key}: unsupported field type {tp!r} (see factory_sam3.config)")
    if not ok:
        raise UserError(f"'{key}' must be {_describe(tp)}, got {value!r}", file)
    return value
