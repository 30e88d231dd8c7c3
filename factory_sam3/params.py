"""Moved to ``factory_sam3.config`` (typed sections, one loader); these names stay for the modules that still
read plain dicts (training, evaluation, pretraining)."""

from factory_sam3.config import PARAMS_FILE, load, section

DEFAULT_PARAMS = str(PARAMS_FILE)
load_params = load

__all__ = ["DEFAULT_PARAMS", "load_params", "section"]
