#!/usr/bin/env python3
"""DVC stage `to_ytvis` (dvc.yaml), a shim: what it does, its settings and options are in
factory_sam3.data.to_ytvis (or run it with --help)."""

from factory_sam3.data.to_ytvis import main

if __name__ == "__main__":
    main()
