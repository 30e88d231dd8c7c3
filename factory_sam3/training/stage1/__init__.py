"""Stage 1: fine-tune SAM3's image model with sam3's own Trainer and the Hydra configs in configs/stage1.

config.py    the `model` + `train_stage1` settings, checked, and the composed Hydra config
data.py      sam3's COCO loader with category names as text prompts
train.py     the launcher: one process, DDP or SLURM (submitit); resumable; the export to models/stage1
step_log.py  per-step losses and progress lines from inside the Trainer
stage.py     the DVC stage: train, export, metrics and plot, MLflow (stages/train_stage1.py)

Shared with Stage 2: training.common (ports, seeding, checkpoint files).
"""
