#!/usr/bin/env python3
"""DVC stage `to_coco` (dvc.yaml). What it does, its settings and options: factory_sam3.data.to_coco (or --help)."""

from factory_sam3.data.to_coco import main

if __name__ == "__main__":
    main()
