"""Evaluation: did fine-tuning help, in images and in video, and how fast does the result run?

- ``metrics``: DAVIS J / F / J&F, COCO AP (pycocotools), YTVIS mAP (sam3.eval.ytvis_eval).
- ``pictures``: overlay PNGs (ground truth beside prediction), tracked-clip GIFs, loss curves.
- ``runner``: scores any ``predict_image`` / ``track`` callables on the COCO and YTVIS test splits.
- ``models``: the baseline (un-fine-tuned start of the profile) and fine-tuned models as those callables.
- ``stage``: the DVC ``evaluate`` stage (``stages/evaluate.py``): metrics/evaluate.json, reports/evaluate/,
  reports/evaluate_details.json, MLflow run ``evaluate`` tagged with the pipeline run.
"""
