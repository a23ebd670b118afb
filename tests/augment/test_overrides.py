"""Augmentations from the config: each view's settings from YAML or --set, checked, resolved
into the plan, and drawn as asked."""

from __future__ import annotations

import pytest
import torch
import yaml

from byol import ConfigError
from byol.cli import main
from byol.config import load_config, resolve
from byol.train import Trainer
from byol.train.monitor import load_training_data

BASE = {"data": "digits", "arch": "convnet", "hidden_dim": 32, "batch_size": 32,
        "knn_every": 0, "tensorboard": False, "augment": "imagenet"}  # fmt: skip


def _drawn(config, n: int = 2000):
    trainer = Trainer(config)
    data, _ = load_training_data(config)
    trainer.build(data)
    images = data.images[:n].repeat(1 + n // len(data.images), 1, 1, 1)[:n]
    generator = torch.Generator().manual_seed(0)
    return trainer.augment(images, generator=generator, return_params=True)[2:]


def test_overrides_change_the_drawn_statistics_as_asked(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({**BASE, "augment": {
        "preset": "imagenet", "view1": {"flip_prob": 0.0, "jitter_prob": 0.25},
        "view2": {"solarize_prob": 0.9}}}))  # fmt: skip
    config = load_config(
        path,
        {"out": str(tmp_path / "r")},
        sets=["augment.view2.blur_prob=0.0", "augment.view1.blur_sigma=[1, 1]"],
    )
    assert config.augment == "imagenet"
    assert config.augment_view2 == {"solarize_prob": 0.9, "blur_prob": 0.0}  # merged
    first, second = _drawn(config)
    n = len(first["flip"])
    assert not bool(first["flip"].any())  # flip_prob 0
    assert float(first["jitter"].float().mean()) == pytest.approx(
        0.25, abs=4 * (0.25 * 0.75 / n) ** 0.5
    )
    assert float(second["solarize"].float().mean()) == pytest.approx(0.9, abs=4 * (0.09 / n) ** 0.5)
    assert not bool((second["blur_sigma"] > 0).any())  # view 2 blur off
    blurred = first["blur_sigma"][first["blur_sigma"] > 0]
    assert torch.allclose(blurred, torch.ones_like(blurred))  # sigma fixed at 1
    # The untouched settings keep the preset's values: view 2 still flips half the images.
    assert float(second["flip"].float().mean()) == pytest.approx(0.5, abs=4 * (0.25 / n) ** 0.5)


def test_resolved_pipeline_is_written_to_config_yaml(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--arch", "convnet", "--hidden-dim", "32",
                 "--batch-size", "32", "--max-steps", "1", "--knn-every", "0",
                 "--no-tensorboard", "--out", str(out),
                 "--set", "augment.view2.solarize_prob=0.0",
                 "--set", "base_lr=0.3"]) == 0  # fmt: skip
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["augment_view2"] == {"solarize_prob": 0.0} and written["base_lr"] == 0.3
    view1, view2 = written["plan"]["view_configs"]
    assert view2["solarize_prob"] == 0.0 and view1["solarize_prob"] == 0.0
    assert view2["grayscale_prob"] == 0.2 and view1["crop_scale"] == [0.08, 1.0]
    # The run folder's config.yaml is a valid config again, overrides included.
    assert load_config(out / "config.yaml").augment_view2 == {"solarize_prob": 0.0}


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["augment.view2.solarise_prob=0.1"],
         "augment.view2.solarise_prob (did you mean 'solarize_prob'?)"),
        (["augment.view1.flip_prob=1.5"],
         "augment.view1: ViewConfig.flip_prob must be a probability"),
        (["augment.view3.flip_prob=0.5"],
         "dotted keys are augment.view1.NAME or augment.view2.NAME"),
        (["base_lr"], "expected KEY=VALUE"),
        (["bse_lr=0.1"], "unknown config key 'bse_lr' in overrides (did you mean 'base_lr'?)"),
    ],
)  # fmt: skip
def test_bad_overrides_name_the_setting(sets, message):
    with pytest.raises(ConfigError) as error:
        load_config(None, dict(BASE), sets=sets)
    assert message in str(error.value)


def test_an_augment_block_with_unknown_parts_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("augment: {preset: cifar, view3: {}}\n")
    with pytest.raises(ConfigError, match="the augment block takes preset, view1 and view2"):
        load_config(path)
    assert resolve({"augment_view1": {"hue": 0.0}}).augment_view1 == {"hue": 0.0}
