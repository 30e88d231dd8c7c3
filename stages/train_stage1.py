#!/usr/bin/env python3
"""train_stage1: fine-tune SAM3's image model on data/coco with sam3's own Trainer (Stage 1, spatial).

Reads data/coco/{train,valid} and the `model` + `train_stage1` sections of params.yaml; composes the
Hydra config in configs/stage1 (profile tiny: small SAM3 on CPU; sam3: full size on GPU); trains,
resuming from runs/train_stage1/<config hash>/checkpoints/ after an interrupted run; writes
models/stage1/ (model.pt in sam3's builder key layout + config.yaml + stage1.json),
metrics/train_stage1.json and plots/train_stage1_loss.csv, and logs the run to MLflow.
"""

from __future__ import annotations

import argparse

from factory_sam3.errors import cli_entry


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    args = parser.parse_args(argv)

    from factory_sam3.training.stage1_stage import run_stage

    run_stage(args.params)


if __name__ == "__main__":
    main()
