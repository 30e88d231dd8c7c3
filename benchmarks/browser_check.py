"""Look at the charts in a real browser, with the network off: `dvc plots show` and the MLflow UI.

Headless Chromium (Debian's `chromium` package: `apt-get install chromium`) renders

  plots    `dvc plots show` (the offline template in .dvc/config) inside a network namespace with no
           network at all (`unshare -n`; without that privilege: every host name unresolvable). Counts
           the Vega charts that drew (DOM: one <canvas class="marks"> each) and the coloured pixels of
           the screenshot. As a control, the same plots with DVC's stock CDN template must draw none.
  mlflow   `python -m factory_sam3.tracking ui` (what `make mlflow-ui` runs) on the store, every host
           name except 127.0.0.1 unresolvable; screenshots of the runs list, one run's step-metric
           charts (plotly lines drawn) and one of its pictures (artifact viewer <img>).

    .venv/bin/python benchmarks/browser_check.py            # the repository's store and plots
    .venv/bin/python benchmarks/browser_check.py --demo     # a scratch project: a tiny logged run
                                                            # with step metrics and a picture
Screenshots and DOM dumps land in benchmarks/out/browser/ (git-ignored); prints a JSON summary and exits
non-zero when a check fails. Not part of `make test`: CI has no Chromium.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(0, str(REPO_ROOT))
VENV_BIN = Path(sys.executable).parent
OFFLINE_FLAGS = [
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>;127.0.0.1",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("no chromium found: `apt-get install chromium` (Debian) and run again")


def can_unshare_network() -> bool:
    return (
        shutil.which("unshare") is not None
        and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
    )


def browse(url: str, out: Path, budget_ms: int, isolate: bool) -> str:
    """Screenshot ``url`` to ``out``.png and return its DOM after ``budget_ms`` of (virtual) page time."""
    base = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1400,1000",
        f"--virtual-time-budget={budget_ms}",
        *OFFLINE_FLAGS,
    ]
    prefix = ["unshare", "-n"] if isolate else []
    subprocess.run(
        [*prefix, *base, f"--screenshot={out.with_suffix('.png')}", url], capture_output=True, timeout=180, check=True
    )
    dom = subprocess.run(
        [*prefix, *base, "--dump-dom", url], capture_output=True, text=True, timeout=180, check=True
    ).stdout
    out.with_suffix(".html").write_text(dom)
    return dom


def coloured_pixels(png: Path) -> int:
    """Pixels with a clear hue (chart lines and bars; text, axes and background are grey/white)."""
    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int(((rgb.max(axis=2) - rgb.min(axis=2)) > 60).sum())


def check_plots(root: Path, out: Path, isolate: bool) -> dict:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = {}
    stock = out / "stock_template.html"
    from dvc_render.html import PAGE_HTML  # DVC's own page: {scripts} brings the CDN <script> tags

    stock.write_text(PAGE_HTML)
    for label, extra in (("offline_template", []), ("stock_cdn_template", ["--html-template", str(stock)])):
        folder = out / f"dvc_plots_{label}"
        shutil.rmtree(folder, ignore_errors=True)
        subprocess.run(
            [str(VENV_BIN / "dvc"), "plots", "show", "-o", str(folder), *extra],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        page = folder / "index.html"
        if not page.is_file():
            raise SystemExit(f"dvc plots show wrote no {page}")
        dom = browse(page.as_uri(), out / f"plots_{label}", 8000, isolate)
        result[label] = {
            "vega_divs": page.read_text().count("vegaEmbed("),
            "charts_drawn": dom.count('class="marks"'),
            "coloured_pixels": coloured_pixels(out / f"plots_{label}.png"),
            "cdn_urls_in_page": page.read_text().count("cdn.jsdelivr.net"),
        }
    offline, stock_result = result["offline_template"], result["stock_cdn_template"]
    result["ok"] = (
        offline["vega_divs"] > 0
        and offline["charts_drawn"] == offline["vega_divs"]
        and offline["cdn_urls_in_page"] == 0
        and stock_result["charts_drawn"] == 0
    )
    return result


def make_demo(folder: Path) -> Path:
    """A scratch DVC project with one run: step metrics, a picture, a registered model version."""
    from helpers_s3 import init_repo, project_env, run

    env = project_env()
    init_repo(folder, env)
    stage = """
import numpy as np
from pathlib import Path
from PIL import Image
from factory_sam3.tracking import record_model, stage_run
Path("models/demo").mkdir(parents=True, exist_ok=True)
Path("models/demo/model.pt").write_bytes(b"demo")
Path("plots").mkdir(exist_ok=True)
rows = ["step,loss"]
with stage_run("train_stage1", params={"lr_scale": 0.1}) as run:
    for step in range(40):
        loss = 2.0 * 0.93 ** step
        rows.append(f"{step},{loss}")
        run.log_metrics({"train/loss": loss}, step=step)
    picture = np.zeros((120, 200, 3), np.uint8); picture[30:90, 40:160] = (230, 120, 20)
    Image.fromarray(picture).save("overlay_demo.png")
    run.log_artifact("overlay_demo.png", "pictures")
    record_model(run, "demo-model")
Path("plots/loss.csv").write_text("\\n".join(rows) + "\\n")
"""
    (folder / "train.py").write_text(stage)
    (folder / "dvc.yaml").write_text(
        "stages:\n  train:\n    cmd: python train.py\n    outs: [models/demo]\n"
        "    plots:\n      - plots/loss.csv: {cache: false, x: step, y: loss}\n"
        "artifacts:\n  demo-model: {path: models/demo, type: model, desc: demo, labels: [demo]}\n"
    )
    shutil.copytree(REPO_ROOT / "configs" / "plots", folder / "configs" / "plots")
    shutil.copy(REPO_ROOT / ".dvc" / "config", folder / ".dvc" / "config")
    run([str(VENV_BIN / "dvc"), "repro", "-q"], folder, project_env(DVC_ROOT=str(folder)))
    return folder


def check_mlflow(root: Path, out: Path) -> dict:
    from mlflow.tracking import MlflowClient

    from helpers_s3 import free_port, project_env

    port = free_port()
    env = project_env(DVC_ROOT=str(root))
    log = open(out / "mlflow_ui.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "factory_sam3.tracking", "ui", "--port", str(port)],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if urllib.request.urlopen(base + "/health", timeout=2).status == 200:
                    break
            except OSError as err:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(f"mlflow ui did not come up; see {out / 'mlflow_ui.log'}") from err
                time.sleep(1)
        client = MlflowClient(tracking_uri=base)
        experiments = [e for e in client.search_experiments() if e.name != "Default"]
        runs = client.search_runs([e.experiment_id for e in experiments], order_by=["attributes.start_time DESC"])
        stepped = next(
            (r for r in runs if any(len(client.get_metric_history(r.info.run_id, m)) > 1 for m in r.data.metrics)), None
        )
        if stepped is None:
            raise SystemExit("no run with step metrics in the store: run the pipeline first, or pass --demo")
        exp_id, run_id = stepped.info.experiment_id, stepped.info.run_id
        picture = next((a for a in _walk_artifacts(client, run_id) if a.endswith(".png")), None)
        pages = {
            "runs_list": f"{base}/#/experiments/{exp_id}/runs",
            "step_metrics": f"{base}/#/experiments/{exp_id}/runs/{run_id}/model-metrics",
        }
        if picture:
            pages["picture"] = f"{base}/#/experiments/{exp_id}/runs/{run_id}/artifacts/{picture}"
        result = {"run_id": run_id, "picture": picture}
        for label, url in pages.items():
            # the metric charts load plotly lazily: a shorter page budget screenshots the loading spinner
            dom = browse(url, out / f"mlflow_{label}", 120000, isolate=False)
            result[label] = {
                "url": url,
                "plotly_charts": dom.count("js-plotly-plot"),
                "lines_drawn": dom.count('class="js-line"'),
                "images": dom.count("<img"),
                "run_name_shown": (stepped.info.run_name or "") in dom,
                "coloured_pixels": coloured_pixels(out / f"mlflow_{label}.png"),
            }
        result["ok"] = (
            result["runs_list"]["run_name_shown"]
            and result["step_metrics"]["lines_drawn"] > 0
            and (picture is None or result["picture"]["images"] > 0)
        )
        return result
    finally:  # the UI's job workers (huey) share its process group: stop them all
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


def _walk_artifacts(client, run_id: str, path: str | None = None):
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            yield from _walk_artifacts(client, run_id, item.path)
        else:
            yield item.path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", action="store_true", help="check a scratch project with a tiny logged run")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "out" / "browser")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="browser-check-") if args.demo else None
    root = make_demo(Path(scratch) / "project") if scratch else REPO_ROOT
    isolate = can_unshare_network()
    summary = {
        "chromium": subprocess.run([chromium(), "--version"], capture_output=True, text=True).stdout.strip(),
        "plots_network": "none (unshare -n)" if isolate else "DNS blocked (host-resolver-rules)",
        "plots": check_plots(root, args.out, isolate),
        "mlflow": check_mlflow(root, args.out),
        "screenshots": str(args.out),
    }
    print(json.dumps(summary, indent=2))
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if summary["plots"]["ok"] and summary["mlflow"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
