"""`dvc plots show` with no network: the configured template carries Vega, Vega-Lite and Vega-Embed inline.
The drawing itself is checked in headless Chromium when it is installed (benchmarks/browser_check.py
does the full check, MLflow UI included); CI needs no browser for the rest."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from helpers_s3 import VENV_BIN, init_repo, project_env, run

pytestmark = pytest.mark.integration  # dvc plots show in a scratch dvc project

REPO = Path(__file__).resolve().parents[1]
DVC = str(VENV_BIN / "dvc")
LOSS_PLOT = "stages:\n  train:\n    cmd: 'true'\n    plots:\n      - loss.csv: {cache: false, x: step, y: loss}\n"


@pytest.fixture(scope="module")
def plots_page(tmp_path_factory) -> Path:
    """`dvc plots show` (the plain command) in a scratch project with this repo's .dvc/config + template."""
    project = tmp_path_factory.mktemp("plots") / "project"
    env = project_env()
    init_repo(project, env)
    shutil.copy(REPO / ".dvc" / "config", project / ".dvc" / "config")
    shutil.copytree(REPO / "configs" / "plots", project / "configs" / "plots")
    (project / "dvc.yaml").write_text(LOSS_PLOT)
    (project / "loss.csv").write_text("step,loss\n" + "".join(f"{i},{2 * 0.9**i}\n" for i in range(30)))
    run([DVC, "plots", "show"], project, env)
    return project / "dvc_plots" / "index.html"


def test_plots_page_has_the_pinned_libraries_inline_and_no_cdn(plots_page):
    import importlib.util

    spec = importlib.util.spec_from_file_location("vendor_vega", REPO / "configs" / "plots" / "vendor_vega.py")
    vendor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vendor)
    html = plots_page.read_text()
    for name, version, _sha, member in vendor.PACKAGES:
        assert f"/* {name}@{version} {member} */" in html, f"{name} not inlined"
        assert (REPO / "configs" / "plots" / "licenses" / f"{name}.LICENSE").is_file()
    assert "vegaEmbed(" in html, "no chart in the page"
    assert "<script src" not in html and "cdn.jsdelivr" not in html


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium not installed (apt-get install chromium)")
def test_chart_draws_in_chromium_without_network(plots_page):
    isolate = subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
    prefix = ["unshare", "-n"] if isolate else []
    dom = subprocess.run(
        [
            *prefix,
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--virtual-time-budget=8000",
            "--dump-dom",
            plots_page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    ).stdout
    assert dom.count('class="marks"') == plots_page.read_text().count("vegaEmbed("), "a chart did not draw"
