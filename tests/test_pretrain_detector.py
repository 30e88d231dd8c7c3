"""The pretraining's detector stage (factory_sam3/pretrain/detector.py): its dense phase learns, a stopped run
resumes where it was instead of starting over, a bad tracker file or state file is one clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from factory_sam3.errors import UserError
from factory_sam3.pretrain.detector import DetectorSettings, build_model, train
from factory_sam3.pretrain.generic_coco import write_generic_coco


@pytest.fixture(scope="module")
def generic(tmp_path_factory):
    """12 generic training stills + 4 valid + 4 test, and a 'tracker stage' file holding a random trunk."""
    from factory_sam3.models.build import build_image_model

    root = tmp_path_factory.mktemp("pretrain")
    write_generic_coco(root / "coco", seed=0, train_images=12, valid_images=4, negative_prob=0.0)
    torch.manual_seed(0)
    image_model = build_image_model("tiny", random_init=True)
    torch.save({"detector." + k: v for k, v in image_model.state_dict().items()}, root / "tracker.pt")
    return root


def _settings(**kwargs) -> DetectorSettings:
    base = dict(dense_steps=30, steps=2, batch=2, eval_every=2, eval_images=2, save_every=10, log_every=10, seed=0)
    return DetectorSettings(**{**base, **kwargs})


@pytest.mark.slow
def test_dense_phase_learns_and_a_stopped_run_resumes(generic, tmp_path):
    run_dir = tmp_path / "run"
    logged = []
    short = _settings(dense_steps=30, steps=2)
    _, history, evals = train(
        short, generic / "coco", generic / "tracker.pt", run_dir, log_metrics=lambda metrics, step: logged.append(step)
    )
    dense = [r["loss"] for r in history if r["phase"] == "dense"]
    assert len(dense) == 30 and [r["phase"] for r in history[-2:]] == ["full", "full"]
    assert np.mean(dense[-5:]) < 0.9 * np.mean(dense[:5]), dense  # the segmentation head learns in 30 steps
    assert evals and evals[-1]["step"] == 32 and evals[-1]["segm_AP"] is not None
    assert logged[:3] == [10, 20, 30]
    # the same run again: resumed from its state file at the end, nothing retrained
    _, again, _ = train(short, generic / "coco", generic / "tracker.pt", run_dir)
    assert [r["loss"] for r in again] == [r["loss"] for r in history]


def test_a_tracker_file_without_the_trunk_is_a_clear_error(generic, tmp_path):
    bad = tmp_path / "tracker.pt"
    torch.save({"tracker.something": torch.zeros(1)}, bad)
    with pytest.raises(UserError, match="trunk and necks"):
        build_model(bad, seed=0)
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read"):
        build_model(tmp_path / "broken.pt", seed=0)


def test_an_unreadable_state_file_is_not_silently_restarted(generic, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "state.pt").write_bytes(b"truncated")
    with pytest.raises(UserError, match="cannot resume"):
        train(_settings(), generic / "coco", generic / "tracker.pt", run_dir)
    # nor leaves its process group behind: the next training in this process (sam3's Trainer) would fail
    assert not torch.distributed.is_initialized()


def test_settings_are_checked():
    with pytest.raises(ValueError):
        _settings(steps=0).check("params.yaml")
    assert _settings().key() != _settings(lr=1e-3).key()


def test_a_state_file_of_another_model_is_a_clear_error(generic, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.save({"model": {"not.this.model": torch.zeros(1)}}, run_dir / "state.pt")
    with pytest.raises(UserError, match="another model"):
        train(_settings(), generic / "coco", generic / "tracker.pt", run_dir)
    assert not torch.distributed.is_initialized()
