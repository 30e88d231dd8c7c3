"""Fine-tuning SAM3 for factory vision: data stages, Stage 1/2 training, evaluation, run tracking.

The DVC stages in ``stages/`` are thin command-line wrappers around this package.
"""

__version__ = "0.1.0"
