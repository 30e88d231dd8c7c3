"""Each sam3 0.1.4 workaround in factory_sam3.models.sam3_compat is needed (upstream fails without it on
this CUDA-less machine) and sufficient (the same call works with it)."""

from __future__ import annotations

import inspect

import pytest
import torch

from factory_sam3.models import sam3_compat

# "needed" means upstream fails without the workaround, which it does only where there is no CUDA; the tests
# that the patches stay off on CUDA and the device settings run everywhere
needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="upstream only fails without CUDA")


@pytest.fixture
def without(request):
    """Revert the named patch for the test, re-apply it afterwards (others stay applied)."""

    def _without(name):
        sam3_compat.apply()
        sam3_compat.revert((name,))
        request.addfinalizer(sam3_compat.apply)

    return _without


def _geometry_encoder():
    from factory_sam3.models.tiny import build_tiny_image_model

    return build_tiny_image_model(train=False).geometry_encoder


def _encode_boxes(encoder):
    d = encoder.d_model if hasattr(encoder, "d_model") else 64
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2]]])  # [n_boxes, bs, 4] cxcywh, normalised
    mask = torch.zeros(1, 1, dtype=torch.bool)
    labels = torch.ones(1, 1, dtype=torch.long)
    feats = torch.randn(1, d, 16, 16)
    return encoder._encode_boxes(boxes, mask, labels, feats)


@needs_no_cuda
def test_pin_memory_patch_needed_and_sufficient(without):
    encoder = _geometry_encoder()
    without("pin_memory")
    with pytest.raises(RuntimeError):
        _encode_boxes(encoder)
    sam3_compat.apply(("pin_memory",))
    embed, _ = _encode_boxes(encoder)
    assert torch.isfinite(embed).all()


@needs_no_cuda
def test_focal_loss_patch_needed_and_sufficient(without):
    from sam3.train.loss import loss_fns

    x, y = torch.randn(3, 7), (torch.rand(3, 7) > 0.5).float()
    without("focal_loss")
    with pytest.raises(RuntimeError):  # the Triton kernel needs a GPU driver
        loss_fns.sigmoid_focal_loss(x, y, 1.0)
    sam3_compat.apply(("focal_loss",))
    got = loss_fns.sigmoid_focal_loss(x, y, 1.0)
    # the RetinaNet focal loss, computed by hand
    p = x.sigmoid()
    ce = torch.nn.functional.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    manual = (0.25 * y + 0.75 * (1 - y)) * ce * (1 - p_t) ** 2
    assert torch.allclose(got, manual.mean(1).sum() / 1.0, atol=1e-6)


@needs_no_cuda
def test_mem_meter_patch_needed_and_sufficient(without):
    from sam3.train.utils.train_utils import MemMeter

    without("mem_meter")
    with pytest.raises(RuntimeError):
        MemMeter("Mem", "cpu").update()
    sam3_compat.apply(("mem_meter",))
    meter = MemMeter("Mem", "cpu")
    meter.update()
    assert meter.val == 0 and meter.count == 1


@needs_no_cuda
def test_position_encoding_patch_needed_and_sufficient(without):
    from sam3.model.position_encoding import PositionEmbeddingSine

    without("pos_enc")
    with pytest.raises(RuntimeError):
        PositionEmbeddingSine(num_pos_feats=32, precompute_resolution=224)
    sam3_compat.apply(("pos_enc",))
    pe = PositionEmbeddingSine(num_pos_feats=32, precompute_resolution=224)
    assert sorted(pe.cache) == [(7, 7), (14, 14), (28, 28), (56, 56)]
    fresh = PositionEmbeddingSine(num_pos_feats=32)(torch.zeros(1, 1, 14, 14))
    assert torch.equal(pe.cache[(14, 14)], fresh[0])


def _decoder(resolution):
    from sam3.model.decoder import TransformerDecoder, TransformerDecoderLayer
    from sam3.model.model_misc import MultiheadAttentionWrapper

    layer = TransformerDecoderLayer(
        activation="relu",
        d_model=32,
        dim_feedforward=64,
        dropout=0.0,
        cross_attention=MultiheadAttentionWrapper(num_heads=2, dropout=0.0, embed_dim=32),
        n_heads=2,
        use_text_cross_attention=True,
    )
    return TransformerDecoder(
        d_model=32,
        frozen=False,
        interaction_layer=None,
        layer=layer,
        num_layers=1,
        num_queries=4,
        return_intermediate=True,
        box_refine=True,
        dac=True,
        boxRPB="log",
        presence_token=True,
        resolution=resolution,
        stride=14,
    )


@needs_no_cuda
def test_decoder_coords_patch_needed_and_sufficient(without):
    without("decoder_coords")
    with pytest.raises(RuntimeError):
        _decoder(224)
    sam3_compat.apply(("decoder_coords",))
    coords_h, coords_w = _decoder(224).compilable_cord_cache
    assert coords_h.device.type == "cpu" and coords_h.shape == (16,)


def test_patches_are_skipped_where_cuda_exists(monkeypatch):
    before = sam3_compat.applied()
    if torch.cuda.is_available():  # on a GPU machine nothing has patched sam3 in this process
        assert before == set() and sam3_compat.apply() == []
    sam3_compat.revert()
    try:
        monkeypatch.setattr(sam3_compat, "cuda_available", lambda: True)
        assert sam3_compat.apply() == [] and sam3_compat.applied() == set()
        monkeypatch.setattr(sam3_compat, "cuda_available", lambda: False)
        assert sam3_compat.apply() == list(sam3_compat.PATCHES)  # without CUDA: every patch
    finally:
        sam3_compat.revert()
        if before:
            sam3_compat.apply(tuple(before), force=True)


# settings, not patches: the config picks them per device (sam3_compat.device_settings)


@needs_no_cuda
def test_dummy_loss_device_setting_needed_and_sufficient():
    from sam3.train.loss.sam3_loss import DummyLoss

    with pytest.raises(RuntimeError):
        DummyLoss()()  # upstream default device="cuda"
    cpu = sam3_compat.device_settings("cpu")
    assert DummyLoss(device=cpu["dummy_loss_device"])()["core_loss"].item() == 0.0


@needs_no_cuda
def test_mask_interpolation_setting_needed_and_sufficient():
    from sam3.eval.postprocessors import PostProcessImage

    masks = torch.randn(1, 3, 8, 8)
    sizes = torch.tensor([[16, 20]])
    with pytest.raises(AssertionError):  # upstream default: always_interpolate_masks_on_gpu=True
        PostProcessImage(max_dets_per_img=-1, iou_type="segm")._process_masks(sizes, masks)
    on_cpu = sam3_compat.device_settings("cpu")["interpolate_masks_on_gpu"]
    out = PostProcessImage(max_dets_per_img=-1, iou_type="segm", always_interpolate_masks_on_gpu=on_cpu)._process_masks(
        sizes, masks
    )
    assert out[0].shape[-2:] == (16, 20)


def test_device_settings_cpu_and_gpu():
    cpu, gpu = sam3_compat.device_settings("cpu"), sam3_compat.device_settings("cuda")
    assert (cpu["backend"], cpu["amp"], cpu["pin_memory"]) == ("gloo", False, False)
    assert (gpu["backend"], gpu["amp"], gpu["pin_memory"]) == ("nccl", True, True)


def test_text_encoder_empty_params_are_initialised():
    from sam3.model.text_encoder_ve import TextTransformer

    from factory_sam3.models.tiny import build_tiny_image_model, init_text_encoder_

    # upstream allocates these with torch.empty and never initialises them
    source = inspect.getsource(TextTransformer.__init__)
    assert "nn.Parameter(torch.empty(self.num_pos, width))" in source
    assert "nn.Parameter(torch.empty(width, output_dim))" in source
    text = build_tiny_image_model(train=False).backbone.language_backbone
    with torch.no_grad():  # what uninitialised memory may hold
        text.encoder.positional_embedding.fill_(float("nan"))
        text.encoder.text_projection.fill_(float("inf"))
    _, memory, _ = text(["gripper"], device="cpu")
    assert not torch.isfinite(memory).all()
    init_text_encoder_(text)
    _, memory, _ = text(["gripper", "screw"], device="cpu")
    assert torch.isfinite(memory).all()


def test_bpe_vocabulary_found_with_the_right_md5():
    import hashlib

    from factory_sam3.models.assets import BPE_MD5, bpe_path

    assert hashlib.md5(bpe_path().read_bytes()).hexdigest() == BPE_MD5
