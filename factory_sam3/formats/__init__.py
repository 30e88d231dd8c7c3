"""Annotation formats: masks and RLE (rle), COCO instance segmentation (coco), YTVIS video instances (ytvis)."""
