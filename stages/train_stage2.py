#!/usr/bin/env python3
"""DVC stage `train_stage2` (dvc.yaml), a shim: what it does, its settings and options are in
factory_sam3.training.stage2.stage (or run it with --help)."""

from factory_sam3.training.stage2.stage import main

if __name__ == "__main__":
    main()
