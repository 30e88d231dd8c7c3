"""The typed params loader (factory_sam3.config), JSON I/O (factory_sam3.io) and the tracking warnings that
replaced silent fallbacks. Fast unit tests: no stage runs."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import yaml

from factory_sam3 import config, io
from factory_sam3.config import Invalid
from factory_sam3.data import frames, to_coco, to_ytvis, validate
from factory_sam3.errors import UserError
from factory_sam3.sources.stage import Params as FetchParams
from helpers_params import repo_params


@dataclass(frozen=True)
class Inner:
    size: int


@dataclass(frozen=True)
class Section:
    rate: float
    name: str | None
    tags: list[str]
    ratios: dict[str, float]
    inner: Inner

    def check(self) -> None:
        if self.rate < 0:
            raise Invalid("rate", f"must be >= 0, got {self.rate!r}")


GOOD = {"rate": 1, "name": None, "tags": ["a"], "ratios": {"x": 0.5}, "inner": {"size": 3}}


def write(tmp_path, section: dict, name: str = "other.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"sec": section}))
    return path


def test_loads_a_section_and_keeps_values_as_written(tmp_path):
    params = config.load_section("sec", Section, write(tmp_path, GOOD))
    assert params == Section(1, None, ["a"], {"x": 0.5}, Inner(3))
    assert isinstance(params.rate, int), "an int for a float key is kept as written (same JSON out)"
    assert config.params_file(params).endswith("other.yaml")
    assert config.as_params_dict("sec", params)["sec.inner.size"] == 3


@pytest.mark.parametrize(
    "change, message",
    [
        ({"colour": 1}, "unknown key 'sec.colour'"),
        ({"inner": {"size": 1, "depth": 2}}, "unknown key 'sec.inner.depth'"),
        ({"rate": "fast"}, "'sec.rate' must be a number, got 'fast'"),
        ({"rate": True}, "'sec.rate' must be a number, got True"),
        ({"inner": {"size": 2.5}}, "'sec.inner.size' must be an integer, got 2.5"),
        ({"tags": ["a", 3]}, "'sec.tags[1]' must be a string, got 3"),
        ({"ratios": {"x": "half"}}, "'sec.ratios.x' must be a number, got 'half'"),
        ({"name": 5}, "'sec.name' must be a string or null, got 5"),
        ({"rate": -1}, "'sec.rate' must be >= 0, got -1"),
    ],
)
def test_one_error_names_the_key_and_the_file_read(tmp_path, change, message):
    path = write(tmp_path, {**GOOD, **change})
    with pytest.raises(UserError) as err:
        config.load_section("sec", Section, path)
    assert err.value.file == str(path) and message in err.value.message


def test_missing_key_and_missing_section(tmp_path):
    path = write(tmp_path, {k: v for k, v in GOOD.items() if k != "tags"})
    with pytest.raises(UserError, match="missing key 'sec.tags'"):
        config.load_section("sec", Section, path)
    with pytest.raises(UserError, match="missing section 'nope'"):
        config.load_section("nope", Section, path)


@pytest.mark.parametrize(
    "name, cls",
    [
        ("fetch", FetchParams),
        ("extract_frames", frames.Params),
        ("to_coco", to_coco.Params),
        ("to_ytvis", to_ytvis.Params),
        ("validate", validate.Params),
    ],
)
def test_every_data_section_of_params_yaml_loads(name, cls):
    """params.yaml holds every key of every data section (the code holds no default of its own)."""
    params = config.from_mapping(cls, repo_params()[name], name)
    assert set(config.as_params_dict(name, params)) >= {
        f"{name}.{k}" for k in repo_params()[name] if not isinstance(repo_params()[name][k], dict)
    }


def test_write_json_formats(tmp_path):
    data = {"b": [1, 2], "a": {"x": 1.5}}
    io.write_json(tmp_path / "pretty.json", data)
    io.write_json(tmp_path / "compact.json", data, indent=None, sort_keys=False, atomic=False)
    assert (tmp_path / "pretty.json").read_text() == json.dumps(data, indent=2, sort_keys=True) + "\n"
    assert (tmp_path / "compact.json").read_text() == '{"b":[1,2],"a":{"x":1.5}}\n'
    assert io.read_json(tmp_path / "pretty.json") == data
    (tmp_path / "bad.json").write_text('{"a": ')
    with pytest.raises(UserError, match="invalid JSON at line 1"):
        io.read_json(tmp_path / "bad.json")
    with pytest.raises(UserError, match="file not found"):
        io.read_json(tmp_path / "missing.json")
    with pytest.raises(UserError, match="missing list 'images'"):
        io.read_json_object(tmp_path / "pretty.json", required=("images",))


def test_unreadable_params_file_warns_about_the_experiment(tmp_path, monkeypatch, capsys):
    from factory_sam3.tracking import store

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    (tmp_path / "params.yaml").write_text("mlflow: {experiment: mine}\n")
    assert store.experiment_name() == "mine"
    (tmp_path / "params.yaml").write_text("mlflow: [broken\n")
    assert store.experiment_name() == store.DEFAULT_EXPERIMENT
    assert "warning: mlflow:" in capsys.readouterr().err


def test_unknown_dataset_version_warns(tmp_path, capsys):
    from factory_sam3.tracking import context

    tags = context.run_tags("train_stage1", tmp_path)
    assert tags["dataset_version"] == "unknown"
    assert "dataset_version is 'unknown'" in capsys.readouterr().err
