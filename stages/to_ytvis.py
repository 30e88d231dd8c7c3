#!/usr/bin/env python3
"""DVC stage `to_ytvis` (dvc.yaml). What it does, its settings and options: factory_sam3.data.to_ytvis (or --help)."""

from factory_sam3.data.to_ytvis import main

if __name__ == "__main__":
    main()
