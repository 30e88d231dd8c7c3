#!/usr/bin/env python3
"""DVC stage `fetch` (dvc.yaml). What it does, its settings and options: factory_sam3.sources.stage (or --help)."""

from factory_sam3.sources.stage import main

if __name__ == "__main__":
    main()
