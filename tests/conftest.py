"""Shared fixtures. The package is imported as installed (`make setup` runs `pip install -e .`); test helpers
live in tests/helpers_*.py and are imported one way, by module name (`from helpers_s3 import ...`): pytest.ini
puts tests/ on the path. Test modules never import each other.
Markers (`integration`, `slow`) are registered in pytest.ini."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
