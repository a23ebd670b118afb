"""``--init-weights``: the run starts from the given encoder weights; mismatches are reported."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from byol import ConfigError, backbones
from byol.cli import main
from byol.config import resolve
from byol.train import Trainer
from byol.warm_start import load_init_weights

RUN = {"data": "digits", "arch": "convnet", "hidden_dim": 32, "projection_dim": 16,
       "batch_size": 32, "knn_every": 0, "tensorboard": False, "num_workers": 0}  # fmt: skip


def _donor(seed: int = 7) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    encoder, _ = backbones.build("convnet", small_images=True, in_channels=1)
    return {k: v.clone() for k, v in encoder.state_dict().items()}


@pytest.mark.parametrize("kind", ["safetensors", "torch", "prefixed torch"])
def test_online_and_target_encoders_start_from_the_file(kind, tmp_path):
    weights = _donor()
    if kind == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file(weights, str(path))
    else:
        path = tmp_path / "w.pt"
        saved = (
            weights
            if kind == "torch"
            else {"state_dict": {f"module.{k}": v for k, v in weights.items()}}
        )
        torch.save(saved, path)
    trainer = Trainer(resolve({**RUN, "init_weights": str(path), "out": str(tmp_path / "r")}))
    data, _ = __import__("byol.train.monitor", fromlist=["x"]).load_training_data(trainer.config)
    trainer.build(data)
    for network in (trainer.model.online_encoder, trainer.model.target_encoder):
        state = network.state_dict()
        assert all(torch.equal(state[k].cpu(), v) for k, v in weights.items())
    # Without it, the same seed gives other weights.
    plain = Trainer(resolve({**RUN, "out": str(tmp_path / "p")}))
    plain.build(data)
    first = next(iter(weights))
    assert not torch.equal(plain.model.online_encoder.state_dict()[first].cpu(), weights[first])


def test_the_first_step_starts_from_the_file(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(_donor(), str(path))
    trainer = Trainer(resolve({**RUN, "init_weights": str(path), "max_steps": 1,
                               "out": str(tmp_path / "r")}), show_progress=False)  # fmt: skip
    seen = {}
    original = trainer.step

    def step(images, index, mark=None):
        if index == 0:
            seen.update(
                {k: v.clone() for k, v in trainer.model.online_encoder.state_dict().items()}
            )
        return original(images, index, mark)

    trainer.step = step
    trainer.fit()
    assert seen and all(torch.equal(seen[k].cpu(), v) for k, v in _donor().items())


def test_mismatches_are_listed_and_exit_2(tmp_path, capsys):
    weights = _donor()
    first = next(iter(weights))
    weights.pop(first)
    weights["head.weight"] = torch.zeros(3)
    path = tmp_path / "bad.safetensors"
    save_file(weights, str(path))
    argv = ["train", "--data", "digits", "--arch", "convnet", "--hidden-dim", "32",
            "--batch-size", "32", "--max-steps", "1", "--knn-every", "0", "--no-tensorboard",
            "--init-weights", str(path)]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "strict")]) == 2
    error = capsys.readouterr().err
    assert f"missing {first}" in error and "unexpected head.weight" in error and str(path) in error
    assert not (tmp_path / "strict" / "checkpoints").exists()
    with pytest.warns(UserWarning, match=f"missing {first}"):
        assert main([*argv, "--init-strict", "false", "--out", str(tmp_path / "loose")]) == 0


def test_shape_mismatch_and_unreadable_files(tmp_path):
    encoder, _ = backbones.build("convnet", small_images=True, in_channels=3)
    path = tmp_path / "gray.safetensors"
    save_file(_donor(), str(path))  # 1-channel stem into a 3-channel encoder
    with pytest.raises(ConfigError, match=r"shape mismatch 0\.weight \(32, 1, 3, 3\) vs"):
        load_init_weights(encoder, path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"no pickle here")
    with pytest.raises(ConfigError, match="is not a plain torch state dict"):
        load_init_weights(encoder, junk)
    with pytest.raises(ConfigError, match="does not exist"):
        load_init_weights(encoder, tmp_path / "missing.safetensors")
