"""params.yaml is the single source of defaults and every key of a section is required: tests that write a
params file of their own start from the repository's section and change only what they test."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def repo_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def section_with(name: str, **overrides) -> dict:
    """The repository's ``name`` section with ``overrides`` (top-level keys) replaced."""
    return {**repo_params()[name], **overrides}
