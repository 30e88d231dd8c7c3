"""Stage 2: temporal fine-tuning of SAM3's tracker (upstream sam3 0.1.4 cannot train video).

config.py   the `train_stage2` settings, checked
data.py     YTVIS loader, clip sampler, clip-consistent augmentation, collate with object/frame bookkeeping
model.py    the training forward: prompt the conditioning frames, propagate with memory, SAM2 losses
losses.py   focal 20 / dice 1 / IoU 1 / object score 1, normalised by objects across DDP ranks
train.py    optimiser, resumable checkpoints, DDP, held-out IoU, outputs
stage.py    the DVC stage: settings from params.yaml, run, MLflow (stages/train_stage2.py)

The per-frame tracking step shared with inference lives in factory_sam3.models.video_memory, the model and
the inference API (load_stage2, track) in factory_sam3.models.video. Shared with Stage 1: training.common.
"""
