import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes minutes (end-to-end pipeline, sweeps)")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
