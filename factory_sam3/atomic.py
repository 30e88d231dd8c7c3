"""Moved to ``factory_sam3.io`` (JSON and atomic writes in one place); kept for the modules that still import
it from here (training, evaluation, models, pretraining, predict)."""

from factory_sam3.io import atomic_dir, atomic_file, write_json

__all__ = ["atomic_dir", "atomic_file", "write_json"]
