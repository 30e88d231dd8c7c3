#!/usr/bin/env python3
"""DVC stage `validate` (dvc.yaml). What it does, its settings and options: factory_sam3.data.validate (or --help)."""

from factory_sam3.data.validate import main

if __name__ == "__main__":
    main()
