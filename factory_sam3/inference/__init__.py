"""Running the models on frames: SAM3's text-prompted detect-then-track scheme for video (``vis``), the
streamed tracker session it drives on a Stage 2 model (``online``), shared by ``evaluate`` and ``predict``."""
