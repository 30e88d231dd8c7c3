"""Training: Stage 1 (spatial, sam3's own Trainer: factory_sam3.training.stage1) and Stage 2 (temporal)."""
