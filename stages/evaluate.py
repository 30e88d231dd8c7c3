#!/usr/bin/env python3
"""DVC stage `evaluate` (dvc.yaml), a shim: what it does, its settings and options are in
factory_sam3.evaluation.stage (or run it with --help)."""

from factory_sam3.evaluation.stage import main

if __name__ == "__main__":
    main()
