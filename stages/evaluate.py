#!/usr/bin/env python3
"""evaluate: did fine-tuning help, in images and in video, and how fast does the result run?

Scores the starting weights (`baseline`: the profile's un-fine-tuned models), Stage 1 in video
(`stage1`: the Stage 1 detector with the starting tracker) and the fine-tuned models (`finetuned`:
models/stage1 for images, models/stage2 for video) on the test splits:
  images  data/coco/test   text prompts = category names; COCO segm/bbox AP, AP50, AP75, per-class AP
  video   data/ytvis/test  each object prompted with its first visible ground-truth mask and tracked;
                           J, F, J&F (DAVIS 2017: annotated frames after the prompt but the
                           last, true negatives included, objects pooled); and text-prompted video
                           instance segmentation (image model finds objects by class name on
                           keyframes, tracker follows them) scored with YTVIS mAP (sam3's evaluator)
                           on annotated frames only
  spread  95% bootstrap intervals: over videos (J, F, J&F, paired for gains), over images (segm AP)
  speed   images/s and frames/s of the model calls, with the device named
Writes metrics/evaluate.json (DVC metrics), reports/evaluate/ (overlay PNGs, tracked-clip GIFs, loss
curves) and reports/evaluate_details.json; logs all of it to MLflow (run name `evaluate`, tagged with the
pipeline run like the training stages). Settings: the `evaluate` and `model` sections of params.yaml.
"""

from __future__ import annotations

import argparse

from factory_sam3.errors import cli_entry
from factory_sam3.params import load_params


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    args = parser.parse_args(argv)

    from factory_sam3.evaluation.stage import METRICS_FILE, run
    from factory_sam3.params import section

    all_params = load_params(args.params)
    section("evaluate", args.params)  # a clear error if the section is missing
    metrics = run(all_params, log_mlflow=False if args.no_mlflow else None)
    rows = ("segm_AP", "bbox_AP", "J", "F", "J&F", "J_present", "empty_when_absent", "vis_mAP", "images_per_s",
            "frames_per_s")
    labels = [label for label in ("baseline", "stage1", "finetuned") if label in metrics]
    print(f"device: {metrics['device']}   profile: {metrics['profile']}")
    print(f"{'':18s}" + "".join(f"{label:>12s}" for label in labels) + f"{'gain':>10s}   gain 95% CI")
    for key in rows:
        values = [metrics[label].get(key) for label in labels] + [metrics["gain"].get(key)]
        ci = metrics["gain"].get(f"{key}_ci95")
        print(f"{key:18s}" + "".join(f"{'-' if v is None else f'{v:.4f}':>{w}s}"
                                     for v, w in zip(values, [12] * len(labels) + [10]))
              + (f"   [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
    finetuned = metrics.get("finetuned", {})
    print(f"n: {finetuned.get('images')} images ({finetuned.get('instances')} instances); {finetuned.get('videos')} "
          f"videos, {finetuned.get('objects')} objects, {finetuned.get('frames')} object-frames (J/F: "
          f"{finetuned.get('present_frames')} with the object present, {finetuned.get('absent_frames')} without)")
    for label in labels:
        ci = metrics[label].get("J&F_ci95")
        if ci:
            print(f"{label} J&F 95% CI (bootstrap over videos): [{ci[0]:.3f}, {ci[1]:.3f}]")
    reference = metrics.get("reference", {})
    print(f"reference J&F without a model: prompt copied forward {reference.get('copy_prompt_J&F') or 0:.4f}, "
          f"empty masks {reference.get('empty_J&F') or 0:.4f}")
    gain = metrics.get("gain", {})
    better = [k for k in ("segm_AP", "J&F") if (gain.get(k) or 0) > 0]
    worse = [k for k in ("segm_AP", "J&F") if k in gain and k not in better]
    if worse:
        print(f"note: the fine-tuned model does not beat the baseline on {', '.join(worse)} "
              "(train longer or check the training stages' loss curves in reports/evaluate/loss_curves.png)")
    print(f"wrote {METRICS_FILE}")


if __name__ == "__main__":
    main()
