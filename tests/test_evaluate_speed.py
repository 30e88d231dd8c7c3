"""The batched inference paths evaluate uses give what the one-at-a-time paths gave.

- ``predict_image``: all class prompts in one grounding pass == sam3's Sam3Processor, one prompt at a time.
- ``track``: one pass over the video, later objects joining the running batch == one propagation per start
  frame (the previous implementation, kept here as the reference).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from factory_sam3.models import video as video_models
from factory_sam3.models import video_memory as vm


@pytest.fixture(scope="module")
def image_model():
    from factory_sam3.models import build_image_model

    torch.manual_seed(0)
    return build_image_model("tiny", device="cpu", train=False)


def test_batched_prompts_equal_sam3_processor_one_prompt_at_a_time(image_model):
    from PIL import Image
    from sam3.model.sam3_image_processor import Sam3Processor

    from factory_sam3.models.predict import predict_image

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (72, 96, 3), dtype=np.uint8))
    prompts = ["gripper", "part_A", "defect", "screw"]
    batched = predict_image(image_model, image, prompts, score_threshold=0.0)
    processor = Sam3Processor(image_model, resolution=image_model.resolution_px, device="cpu", confidence_threshold=0.0)
    reference = []
    with torch.inference_mode():
        state = processor.set_image(image)
        for prompt in prompts:
            processor.reset_all_prompts(state)
            state = processor.set_text_prompt(prompt, state)
            for i in range(len(state["scores"])):
                reference.append(
                    (prompt, float(state["scores"][i]), state["masks"][i, 0].numpy(), state["boxes"][i].tolist())
                )
    assert len(batched) == len(reference) > len(prompts)
    for prompt in prompts:
        ours = [r for r in batched if r[0] == prompt]
        theirs = sorted((r for r in reference if r[0] == prompt), key=lambda r: -r[1])
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert a[1] == pytest.approx(b[1], abs=1e-5)
            assert np.allclose(a[3], b[3], atol=1e-3)
            assert np.mean(a[2] != b[2]) < 1e-3 and a[2].shape == (72, 96)
    top3 = predict_image(image_model, image, prompts, score_threshold=0.0, max_detections=3)
    assert len(top3) == 3 * len(prompts)
    assert predict_image(image_model, image, []) == []


def track_per_start_frame(model, frames, first_masks):
    """The previous ``track``: one propagation pass per distinct prompt frame (reference)."""
    H, W = frames[0].shape[:2]
    size = model.image_size
    results = {obj: [np.zeros((H, W), bool)] * len(frames) for obj in first_masks}
    images = video_models.preprocess_frames(frames, size, "cpu")
    feats = vm.clip_features(model, images, chunk=8)
    by_start = {}
    for obj, (start, mask) in first_masks.items():
        by_start.setdefault(start, []).append((obj, mask))
    for start, objects in sorted(by_start.items()):
        ids = [o for o, _ in objects]
        prompt = vm.resize_masks(torch.from_numpy(np.stack([m for _, m in objects]))[:, None], size) > 0.5
        cond, prev = {}, {}
        num = len(frames) - start
        for k in range(num):
            f, p = feats.frame(start + k, len(ids))
            out = vm.track_frame(
                model.tracker,
                f,
                p,
                k,
                is_cond=(k == 0),
                cond_outputs=cond,
                prev_outputs=prev,
                num_frames=num,
                mask_inputs=prompt if k == 0 else None,
            )
            (cond if k == 0 else prev)[k] = out
            prev.pop(k - model.tracker.num_maskmem - model.tracker.max_obj_ptrs_in_encoder, None)
            logits = F.interpolate(out.masks.float(), size=(H, W), mode="bilinear", align_corners=False)
            for b, obj in enumerate(ids):
                results[obj][start + k] = (logits[b, 0] > 0).numpy()
    return results


def test_one_pass_tracking_equals_one_pass_per_start_frame():
    model = video_models.build_video_model("tiny", seed=0).eval()
    rng = np.random.default_rng(1)
    H, W, T = 48, 64, 9
    frames = [rng.integers(0, 255, (H, W, 3), dtype=np.uint8) for _ in range(T)]

    def blob(top, left):
        mask = np.zeros((H, W), bool)
        mask[top : top + 12, left : left + 16] = True
        return mask

    # two objects from frame 0, two joining on frame 3, one on frame 6
    prompts = {1: (0, blob(2, 2)), 2: (0, blob(20, 30)), 3: (3, blob(30, 5)), 4: (3, blob(5, 40)), 5: (6, blob(25, 20))}
    with torch.no_grad():
        expected = track_per_start_frame(model, frames, prompts)
    got = video_models.track(model, frames, prompts)
    assert set(got) == set(prompts)
    for obj, (start, _) in prompts.items():
        assert len(got[obj]) == T
        assert not any(m.any() for m in got[obj][:start])  # nothing before the prompt frame
        assert np.array_equal(got[obj][start], expected[obj][start])
        for t in range(start, T):
            assert np.mean(got[obj][t] != expected[obj][t]) < 1e-3, (obj, t)
    assert any(expected[obj][t].any() for obj in prompts for t in range(prompts[obj][0] + 1, T))  # not all empty
