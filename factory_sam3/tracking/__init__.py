"""Run tracking: every training and evaluation run logs params, per-step metrics and artifacts to MLflow.

Use::

    from factory_sam3.tracking import stage_run
    with stage_run("train_stage1", params={"lr_scale": 0.1, ...}) as run:
        run.log_metrics({"loss": 1.2}, step=3)
        run.log_artifact("metrics/train_stage1.json")
"""

from factory_sam3.tracking.mlflow_run import StageRun, stage_run, tracking_uri

__all__ = ["StageRun", "stage_run", "tracking_uri"]
