"""One checkpoint schema: what training writes is what hand-over reads, old formats included."""

import pytest
import torch

from byol import CheckpointError
from byol.checkpoint import save_checkpoint
from byol.config import resolve
from byol.handover import load_encoder
from byol.state import CHECKPOINT_FORMAT, read_state
from byol.train import train

TINY = {
    "data": "digits", "arch": "convnet", "hidden_dim": 64, "projection_dim": 32,
    "batch_size": 32, "epochs": 1, "knn_every": 0, "tensorboard": False, "num_workers": 0,
}  # fmt: skip


def trained_state(tmp_path):
    train(resolve({**TINY, "out": str(tmp_path / "run"), "max_steps": 2}), show_progress=False)
    return read_state(tmp_path / "run" / "checkpoints" / "last.pt")


def test_training_writes_the_plan_and_hand_over_reads_it(tmp_path):
    state = trained_state(tmp_path)
    assert state.format == CHECKPOINT_FORMAT == 2 and state.step == 2
    assert (state.plan.view_size, state.plan.channels, state.plan.small_images) == (8, 1, True)
    assert state.plan.steps_per_epoch == 1437 // 32 and state.epoch == 0
    encoder, info = load_encoder(tmp_path / "run")
    assert (info.image_size, info.in_channels, info.mean) == (8, 1, state.plan.mean)
    weights = state.encoder_state()
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in weights.items())


def test_a_format_1_checkpoint_still_loads(tmp_path):
    state = trained_state(tmp_path)
    old = state.to_payload()
    # byol 0.1 wrote format 1: no plan, the sizes and normalisation under "data".
    old["format"] = 1
    old.pop("plan")
    old["data"] = {"mean": list(state.plan.mean), "std": list(state.plan.std), "image_size": 8,
                   "view_size": 8, "channels": 1, "augment": "cifar"}  # fmt: skip
    save_checkpoint(old, tmp_path / "old.pt")
    again = read_state(tmp_path / "old.pt")
    assert again.format == 1 and again.plan.small_images is True  # worked out from 8 px
    assert again.plan.steps_per_epoch is None
    encoder, info = load_encoder(tmp_path / "old.pt")
    assert info.image_size == 8 and encoder(torch.zeros(2, 1, 8, 8)).shape[0] == 2


def test_an_unknown_format_is_refused_naming_it(tmp_path):
    save_checkpoint({"format": 7, "model": {}, "step": 0, "config": {}}, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match=r"new\.pt has format 7; this byol reads formats 1"):
        read_state(tmp_path / "new.pt")
    save_checkpoint({"format": 2, "model": {}, "step": 0, "config": {}}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"bad\.pt \(format 2\) has no 'plan' entry"):
        read_state(tmp_path / "bad.pt")
