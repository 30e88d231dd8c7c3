"""The tiny detector's query selection (factory_sam3/models/query_selection.py): its decoder starts at the encoder's
best-scored proposals, sam3's own loss supervises those proposals, and adding it leaves every other weight's random
init (the pretrained tracker's) as it was."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from factory_sam3.models.query_selection import QuerySelectionSam3Image
from factory_sam3.models.tiny import TINY_CONFIG, build_tiny_image_model


def test_the_head_does_not_change_any_other_weight_nor_the_random_stream():
    torch.manual_seed(0)
    with_head = build_tiny_image_model(seed=0)
    after_with = torch.rand(3)
    torch.manual_seed(0)
    without = build_tiny_image_model(dataclasses.replace(TINY_CONFIG, query_selection=False), seed=0)
    after_without = torch.rand(3)
    assert isinstance(with_head, QuerySelectionSam3Image) and not isinstance(without, QuerySelectionSam3Image)
    assert torch.equal(after_with, after_without)  # what is built next (the video tracker) initialises the same
    extra = set(with_head.state_dict()) - set(without.state_dict())
    assert extra and all(key.startswith("proposal_head.") for key in extra)
    for key, value in without.state_dict().items():
        assert torch.equal(value, with_head.state_dict()[key]), key


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    from hydra.utils import instantiate

    from factory_sam3.pretrain.detector import stage1_settings
    from factory_sam3.pretrain.generic_coco import write_generic_coco
    from factory_sam3.training.stage1.train import prepare

    root = tmp_path_factory.mktemp("qs")
    write_generic_coco(root / "coco", seed=0, train_images=2, valid_images=1, negative_prob=0.0)
    cfg, _, _ = prepare(stage1_settings(root / "coco"), runs_dir=root / "config")
    dataset = instantiate(cfg.trainer.data.train.dataset)
    collate = instantiate(cfg.trainer.data.train.collate_fn)
    loss_fn = instantiate(cfg.trainer.loss.all)
    _, batch = collate([dataset[0], dataset[1]]).popitem()
    return batch, loss_fn


def test_the_decoder_starts_at_the_best_proposals_and_sam3s_loss_trains_them(batch):
    from factory_sam3.models import sam3_compat
    from factory_sam3.pretrain.detector import ensure_process_group, find_output

    sam3_compat.apply()  # sam3's CPU fixes, as every builder of the project applies them
    batch, loss_fn = batch
    torch.manual_seed(0)
    model = build_tiny_image_model(seed=0)
    seen = {}
    decoder_forward = model.transformer.decoder.forward

    def spy(*args, **kwargs):
        seen["reference"] = kwargs["reference_boxes"]
        return decoder_forward(*args, **kwargs)

    model.transformer.decoder.forward = spy
    outputs = model(batch)
    proposals = find_output(outputs, "first_stage")
    tokens = TINY_CONFIG.feature_size**2
    prompts = proposals["pred_logits"].shape[0]
    assert proposals["pred_logits"].shape == (prompts, tokens, 1)
    assert proposals["pred_boxes"].shape == (prompts, tokens, 4) and "indices" in proposals
    # the decoder's starting boxes are the num_queries best-scored proposals of each prompt
    top = proposals["pred_logits"][..., 0].topk(TINY_CONFIG.num_queries, dim=1).indices
    expected = proposals["pred_boxes"].gather(1, top[..., None].expand(-1, -1, 4))
    assert torch.allclose(seen["reference"].transpose(0, 1), expected.detach())

    made = ensure_process_group()
    try:
        terms = loss_fn(outputs, [model.back_convert(t) for t in batch.find_targets])
    finally:
        if made:
            torch.distributed.destroy_process_group()
    assert {"loss_giou_fs", "loss_bbox_fs", "loss_ce_fs", "loss_giou_fs_o2m"} <= set(terms)
    terms["core_loss"].backward()
    grads = [p.grad for p in model.proposal_head.parameters()]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)


def test_masks_stay_inside_their_boxes(batch):
    from factory_sam3.models import sam3_compat
    from factory_sam3.models.query_selection import OUTSIDE, inside_boxes
    from factory_sam3.pretrain.detector import find_output

    box = torch.tensor([[0.5, 0.25, 0.5, 0.5]])  # x 0.25-0.75, y 0-0.5
    keep = inside_boxes(box, 4, 4)[0]
    assert keep.tolist() == [[False, True, True, False], [False, True, True, False], [False] * 4, [False] * 4]

    sam3_compat.apply()
    torch.manual_seed(0)
    model = build_tiny_image_model(seed=0)
    outputs = model(batch[0])
    masks, boxes = find_output(outputs, "pred_masks"), find_output(outputs, "pred_boxes")
    outside = ~inside_boxes(boxes, *masks.shape[-2:])
    assert outside.any() and (masks[outside] == OUTSIDE).all()
    assert (masks[~outside] != OUTSIDE).all()  # inside, the mask head decides
