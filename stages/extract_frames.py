#!/usr/bin/env python3
"""DVC stage `extract_frames` (dvc.yaml).
What it does, its settings and options: factory_sam3.data.frames (or --help)."""

from factory_sam3.data.frames import main

if __name__ == "__main__":
    main()
