#!/usr/bin/env python3
"""DVC stage `validate` (dvc.yaml), a shim: what it does, its settings and options are in
factory_sam3.data.validate (or run it with --help)."""

from factory_sam3.data.validate import main

if __name__ == "__main__":
    main()
