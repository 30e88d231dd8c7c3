"""Probe what makes the tiny SAM3 detector learn the generic concepts (issue 10's open gate criterion).

A plain training loop over exactly what the pretraining's detector stage trains (the Stage 1 Hydra config composed by
``training.stage1.train.prepare``: the tiny image model, sam3's dataset, collate and ``Sam3LossWrapper``) so that one
factor at a time can change: learning rate, batch size, anchor-like reference boxes, pooled-text fusion, the text
embedding's init scale, which loss trains (all, presence only, semantic only), a warm start, an overfit subset.
It prints windowed means of the loss terms every 50 steps and segm AP on held-out generic test images (the gate's
``detection_report``) every ``--eval-every`` steps, and saves the state dict there (``--out``).

    python benchmarks/detector_probe.py --name A --no-pooled --text-std 0.02 --steps 800   # the first runs' model
    python benchmarks/detector_probe.py --name S1 --only-semantic --batch 2 --steps 600
    python benchmarks/detector_probe.py --name X4 --overfit 4 --steps 400           # memorise 4 images

Needs the pretraining's generic data and tracker (``dvc repro pretrain/dvc.yaml:tracker``). Results: RESULTS.md,
"The detector: what was probed".
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from factory_sam3.pretrain.detector import ensure_process_group, find_output, lr_scale, semantic_loss

REPO = Path(__file__).resolve().parents[1]
WINDOW = int(os.environ.get("PROBE_WINDOW", 50))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", default="probe", help="label of the printed lines and the saved state dict")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=1, help="images per step (every concept is queried on each)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW lr of everything but the trunk (cosine, warm-up)")
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--trunk-lr", type=float, default=0.0, help="0 keeps the image trunk frozen (the pipeline's)")
    p.add_argument(
        "--init",
        choices=("tracker", "random"),
        default="tracker",
        help="start from the pretraining's tracker (its trunk) or from random weights",
    )
    p.add_argument(
        "--anchors",
        type=float,
        default=0.0,
        help="> 0: reference boxes on a grid with this width/height (fraction of the image)",
    )
    p.add_argument(
        "--no-pooled",
        action="store_true",
        help="do not add the pooled prompt to the image features (the tiny profile does; upstream does not)",
    )
    p.add_argument(
        "--no-head-attention",
        action="store_true",
        help="drop the segmentation head's own cross-attention to the prompt: its text conditioning must "
        "then come from the fusion encoder, whose output the decoder (presence, queries) also reads",
    )
    p.add_argument("--text-std", type=float, default=0.0, help="> 0: re-initialise the token embedding N(0, std)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--only-presence", action="store_true", help="train the presence logit alone (BCE)")
    group.add_argument("--only-semantic", action="store_true", help="train the semantic head alone (BCE + dice)")
    p.add_argument(
        "--aux-semantic", type=float, default=0.0, help="add this weight x the BCE + dice semantic loss to sam3's loss"
    )
    p.add_argument("--box-weight", type=float, default=1.0, help="x the box terms' weights (L1 5, GIoU 2)")
    p.add_argument("--load", type=Path, help="warm start from a state dict saved by this script")
    p.add_argument("--overfit", type=int, default=0, help="> 0: train on the first N training images only")
    p.add_argument("--eval-every", type=int, default=300)
    p.add_argument("--eval-images", type=int, default=40)
    p.add_argument("--data", type=Path, default=REPO / "pretrain" / "data" / "generic_coco")
    p.add_argument("--tracker", type=Path, default=REPO / "pretrain" / "out" / "tracker" / "model.pt")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "detector_probe")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def presence_loss(outputs, batch) -> tuple[torch.Tensor, dict]:
    logits = find_output(outputs, "presence_logit_dec").reshape(-1)
    target = (batch.find_targets[0].num_boxes > 0).float()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    return loss, {"presence_dec_acc": ((logits > 0).float() == target).float().mean()}


def build(args):
    from hydra.utils import instantiate

    from factory_sam3.models.build import build_image_model
    from factory_sam3.pretrain.detector import build_model, stage1_settings
    from factory_sam3.training.stage1.train import prepare

    settings = stage1_settings(args.data)
    cfg, _, _ = prepare(settings, runs_dir=args.out / "config")
    if args.init == "tracker":  # fresh heads and text encoder on the tracker stage's trunk and necks
        model = build_model(args.tracker, args.seed)
    else:
        torch.manual_seed(args.seed)
        model = build_image_model("tiny", train=True, random_init=True)
    dataset = instantiate(cfg.trainer.data.train.dataset)
    collate = instantiate(cfg.trainer.data.train.collate_fn)
    loss_fn = instantiate(cfg.trainer.loss.all)
    for term in loss_fn.loss_fns_find:
        if type(term).__name__ == "Boxes":
            term.weight_dict = {k: v * args.box_weight for k, v in term.weight_dict.items()}
    if args.text_std:
        with torch.no_grad():
            torch.nn.init.normal_(model.backbone.language_backbone.encoder.token_embedding.weight, std=args.text_std)
    if args.no_pooled:
        model.transformer.encoder.add_pooled_text_to_img_feat = False
    if args.no_head_attention:
        model.segmentation_head.cross_attend_prompt = None
    if args.anchors:
        ref = model.transformer.decoder.reference_points.weight
        side = math.ceil(math.sqrt(ref.shape[0]))
        with torch.no_grad():
            for i in range(ref.shape[0]):
                box = torch.tensor([((i % side) + 0.5) / side, ((i // side) + 0.5) / side, args.anchors, args.anchors])
                ref[i] = torch.logit(box.clamp(0.02, 0.98))
    if args.load:
        model.load_state_dict(torch.load(args.load, weights_only=True), strict=False)
    return model, dataset, collate, loss_fn


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    ensure_process_group()
    from factory_sam3.pretrain.gate import detection_report

    model, dataset, collate, loss_fn = build(args)
    trunk, rest = [], []
    for name, param in model.named_parameters():
        if name.startswith("backbone.vision_backbone.trunk"):
            param.requires_grad_(args.trunk_lr > 0)
            if args.trunk_lr > 0:
                trunk.append(param)
        else:
            rest.append(param)
    groups = [{"params": rest, "base_lr": args.lr}] + ([{"params": trunk, "base_lr": args.trunk_lr}] if trunk else [])
    optimizer = torch.optim.AdamW(groups, lr=args.lr, weight_decay=0.05)
    args.out.mkdir(parents=True, exist_ok=True)
    history: dict[str, list[float]] = {}
    order: list[int] = []
    start = time.time()
    model.train()
    for step in range(1, args.steps + 1):
        if not order:
            order = list(np.random.permutation(args.overfit or len(dataset)))
        _, batch = collate([dataset[int(order.pop())] for _ in range(args.batch)]).popitem()
        outputs = model(batch)
        if args.only_semantic:
            loss, stats = semantic_loss(outputs, batch)
        elif args.only_presence:
            loss, stats = presence_loss(outputs, batch)
        else:
            stats = loss_fn(outputs, [model.back_convert(t) for t in batch.find_targets])
            loss = stats["core_loss"]
            if args.aux_semantic:
                extra, semantic_stats = semantic_loss(outputs, batch)
                loss = loss + args.aux_semantic * extra
                stats = {**stats, **semantic_stats}
        scale = lr_scale(step, args.steps, args.warmup)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * scale
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for key in (
            "loss_giou",
            "loss_giou_fs",
            "loss_ce_fs",
            "loss_bbox",
            "presence_dec_acc",
            "loss_dice",
            "miou_semantic_seg",
            "semantic_iou_present",
            "semantic_area_absent",
        ):
            value = stats.get(key)
            if value is not None:
                history.setdefault(key, []).append(float(value.detach() if torch.is_tensor(value) else value))
        history.setdefault("loss", []).append(float(loss.detach()))
        if step % WINDOW == 0:
            means = " ".join(f"{k}={np.mean(v[-WINDOW:]):.3f}" for k, v in history.items())
            print(f"{args.name} step {step} {time.time() - start:.0f}s {means}", flush=True)
        if step % args.eval_every == 0 or step == args.steps:
            torch.save(model.state_dict(), args.out / f"{args.name}.pt")
            model.eval()
            with torch.no_grad():
                report = detection_report(model, args.data / "test", args.eval_images)
            model.train()
            print(
                f"{args.name} eval step {step}: segm AP {report.get('segm_AP')} AP50 {report.get('segm_AP50')} "
                f"bbox AP {report.get('bbox_AP')} on {report.get('images')} images",
                flush=True,
            )


if __name__ == "__main__":
    main()
