#!/usr/bin/env python3
"""DVC stage `to_coco` (dvc.yaml), a shim: what it does, its settings and options are in
factory_sam3.data.to_coco (or run it with --help)."""

from factory_sam3.data.to_coco import main

if __name__ == "__main__":
    main()
