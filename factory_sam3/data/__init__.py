"""Dataset building blocks: frames, splits, COCO/YTVIS conversion, validation."""
