"""Run tracking: every training and evaluation run logs params, per-step metrics and artifacts to MLflow.

Use::

    from factory_sam3.tracking import stage_run
    with stage_run("train_stage1", params={"lr_scale": 0.1, ...}) as run:
        run.log_metrics({"loss": 1.2}, step=3)
        run.log_artifact("metrics/train_stage1.json")
        record_model(run, "stage1-model")   # model lineage: dvc.yaml artifact <-> run <-> registry

Commands: ``python -m factory_sam3.tracking {init,ui,runs,find,model,sync,where}`` (see ``--help``).
"""

# store first: importing it sets the MLflow environment defaults before anything imports mlflow
# isort: off
from factory_sam3.tracking.store import local_store_uri, repo_root, tracking_uri
from factory_sam3.tracking.mlflow_run import StageRun, flatten, stage_run
from factory_sam3.tracking.lineage import record_model
# isort: on

__all__ = ["StageRun", "flatten", "local_store_uri", "record_model", "repo_root", "stage_run", "tracking_uri"]
