"""``python -m factory_sam3.tracking COMMAND``: the local MLflow store from the command line.

init   create the local store + experiment now (do it before `dvc queue start -j 2`)
ui     open the MLflow UI on the store (local store by default; 127.0.0.1:5000)
runs   list runs, optionally of one DVC experiment (--exp NAME) or pipeline (--pipeline ID)
find   the runs that produced a stage's current outputs (also when DVC restored them from its
       run cache, which runs no code and logs nothing): matched by the params_hash tag
model  the MLflow run, data version and commit behind a model folder (by its DVC md5), e.g.
       `model models/stage1`; the registry versions of that model
sync   copy runs that fell back to the local store (server was down) to MLFLOW_TRACKING_URI
plot   a PNG of one metric per step across runs (offline picture of a sweep)
where  print the tracking URI and artifact folder in use
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from factory_sam3.errors import UserError, cli_entry
from factory_sam3.tracking import store
from factory_sam3.tracking.context import dataset_hashes, dataset_version, params_hash


def _print_runs(runs) -> None:
    if not runs:
        print("no runs found")
        return
    print(f"{'run_id':32}  {'stage':14} {'dvc_exp_name':22} {'status':9} params_hash  fallback  metrics")
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())[:4])
        print(
            f"{run.info.run_id:32}  {tags.get('stage', ''):14} {tags.get('dvc_exp_name', ''):22} "
            f"{run.info.status:9} {tags.get('params_hash', ''):12} {tags.get('tracking_fallback', ''):9} {shown}"
        )


def _search(filter_string: str, experiment: str | None):
    from mlflow.tracking import MlflowClient

    uri = store.tracking_uri()
    reason = store.probe_server(uri)
    if reason:
        raise UserError(f"tracking server unreachable: {reason}", uri)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(store.experiment_name(experiment))
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string=filter_string, order_by=["attributes.start_time DESC"])


def _plot_runs(runs, metric: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mlflow.tracking import MlflowClient

    from factory_sam3.io import atomic_file

    client = MlflowClient(tracking_uri=store.tracking_uri())
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for run in runs:
        history = sorted(client.get_metric_history(run.info.run_id, metric), key=lambda m: m.step)
        lr = {k: v for k, v in run.data.params.items() if k.endswith("lr_scale")}
        label = run.data.tags.get("dvc_exp_name") or run.info.run_name or run.info.run_id[:8]
        if lr:  # the same value is often logged under several prefixes: show each distinct value once
            label += " (lr_scale=" + ", ".join(sorted(set(lr.values()))) + ")"
        ax.plot([m.step for m in history], [m.value for m in history], label=label)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per step, {len(runs)} run(s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_file(out, "wb") as handle:
        fig.savefig(handle, format="png")
    plt.close(fig)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m factory_sam3.tracking",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--experiment", help="MLflow experiment (default: params.yaml mlflow.experiment)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="create the local store and experiment")
    ui = sub.add_parser("ui", help="open the MLflow UI")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--host", default="127.0.0.1")
    runs = sub.add_parser("runs", help="list runs")
    runs.add_argument("--exp", help="DVC experiment name (as in `dvc exp show`)")
    runs.add_argument("--pipeline", help="pipeline_id tag")
    find = sub.add_parser("find", help="runs matching a stage's current params + dataset (run-cache restores)")
    find.add_argument("stage")
    model = sub.add_parser("model", help="the runs and registry versions behind a model folder (DVC md5)")
    model.add_argument("path", type=Path, help="a model folder, e.g. models/stage1 (or one got with dvc artifacts get)")
    sync = sub.add_parser("sync", help="copy fallback runs to the tracking server")
    sync.add_argument(
        "--to", default=os.environ.get("MLFLOW_TRACKING_URI"), help="server URI (default: MLFLOW_TRACKING_URI)"
    )
    sync.add_argument("--dry-run", action="store_true")
    plot = sub.add_parser("plot", help="PNG of a metric per step across runs")
    plot.add_argument("--metric", default="loss")
    plot.add_argument("--stage", help="only runs of this stage")
    plot.add_argument("--exp", nargs="*", help="only these DVC experiment names")
    plot.add_argument("--last", type=int, default=12, help="at most this many runs, newest first")
    plot.add_argument("--out", type=Path, default=Path("reports") / "runs_loss.png")
    sub.add_parser("where", help="print the store in use")
    args = parser.parse_args(argv)

    if args.command == "init":
        uri, exp_id = store.init_store(args.experiment)
        print(f"local store ready: {uri} (experiment id {exp_id}, artifacts {store.local_artifact_root()})")
    elif args.command == "where":
        print(f"tracking URI: {store.tracking_uri()}")
        print(f"local store:  {store.local_store_uri()}  artifacts: {store.local_artifact_root()}")
    elif args.command == "ui":
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if uri and store.is_http(uri):
            print(f"a tracking server is configured: open {uri} in a browser")
            return 0
        store.init_store(args.experiment)
        command = [
            "mlflow",
            "ui",
            "--backend-store-uri",
            store.local_store_uri(),
            "--default-artifact-root",
            store.local_artifact_root().as_uri(),
            "--host",
            args.host,
            "--port",
            str(args.port),
        ]
        print(" ".join(command), file=sys.stderr)
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        os.execv(str(mlflow_bin) if mlflow_bin.exists() else "mlflow", command)
    elif args.command == "runs":
        clauses = []
        if args.exp:
            clauses.append(f"tags.dvc_exp_name = '{args.exp}'")
        if args.pipeline:
            clauses.append(f"tags.pipeline_id = '{args.pipeline}'")
        _print_runs(_search(" and ".join(clauses), args.experiment))
    elif args.command == "find":
        workdir = Path.cwd()
        digest = params_hash(args.stage, workdir, dataset_version(dataset_hashes(workdir)))
        print(f"stage {args.stage}: params_hash {digest}")
        _print_runs(_search(f"tags.params_hash = '{digest}' and tags.stage = '{args.stage}'", args.experiment))
    elif args.command == "model":
        from factory_sam3.tracking.lineage import describe, dvc_md5, versions_of

        if not args.path.exists():
            raise UserError("no such model file or folder", args.path)
        uri = store.tracking_uri()
        reason = store.probe_server(uri)
        if reason:
            raise UserError(f"tracking server unreachable: {reason}", uri)
        digest = dvc_md5(args.path)
        print(f"{args.path}: DVC md5 {digest}")
        versions = versions_of(args.path, uri, digest)
        if not versions:
            print(f"no registered model version with dvc_md5 {digest} in {uri}")
            return 1
        for version in versions:
            print(describe(version))
    elif args.command == "plot":
        clauses = [f"tags.stage = '{args.stage}'"] if args.stage else []
        runs = _search(" and ".join(clauses), args.experiment)
        if args.exp:
            runs = [r for r in runs if r.data.tags.get("dvc_exp_name") in set(args.exp)]
        runs = [r for r in runs if args.metric in r.data.metrics][: args.last]
        if not runs:
            raise UserError(f"no runs with metric '{args.metric}'", store.tracking_uri())
        _plot_runs(runs, args.metric, args.out)
        print(f"wrote {args.out} ({len(runs)} runs)")
    elif args.command == "sync":
        if not args.to:
            raise UserError("no target: set MLFLOW_TRACKING_URI or pass --to http://host:port", "sync")
        from factory_sam3.tracking.sync import sync as do_sync

        try:
            copied = do_sync(args.to, args.experiment, dry_run=args.dry_run)
        except (ConnectionError, ValueError) as err:
            raise UserError(str(err), args.to) from None
        verb = "would copy" if args.dry_run else "copied"
        print(f"{verb} {len(copied)} run(s) to {args.to}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
