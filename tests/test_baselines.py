"""The baselines BYOL is compared with: the random-init encoder and the supervised reference."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from byol.baselines import random_init_encoder, train_supervised


def _two_class_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dark images are class 0, bright ones class 1 (uint8, 1 channel, 12 px): learnable in
    a few steps, so a trained classifier must score far above chance."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=generator)
    base = torch.where(labels[:, None, None, None] == 1, 180.0, 60.0)
    noise = 20 * torch.randn(n, 1, 12, 12, generator=generator)
    return (base + noise).clamp(0, 255).to(torch.uint8), labels


def _small_encoder() -> tuple[nn.Module, int]:
    torch.manual_seed(0)
    encoder = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1)
    )
    return encoder, 8


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_supervised_reference_learns_and_reports_its_precision(precision):
    train_images, train_labels = _two_class_images(512, seed=0)
    test_images, test_labels = _two_class_images(256, seed=1)
    encoder, dim = _small_encoder()
    result = train_supervised(encoder, dim, train_images, train_labels, test_images,
                              test_labels, mean=[0.47], std=[0.25], seconds=2.0,
                              batch_size=64, seed=0, precision=precision)  # fmt: skip
    assert result["precision"] == precision
    assert result["steps"] > 0 and result["epochs"] > 0
    assert result["top1"] > 0.9, result
    assert result["top5"] is None  # two classes: no top-5


def test_supervised_reference_auto_precision_follows_the_hardware(monkeypatch):
    import byol.baselines as baselines

    monkeypatch.setattr(baselines, "resolve_precision", lambda name, device: "fp32")
    train_images, train_labels = _two_class_images(128, seed=0)
    encoder, dim = _small_encoder()
    result = train_supervised(encoder, dim, train_images, train_labels, train_images,
                              train_labels, mean=[0.47], std=[0.25], seconds=0.5,
                              batch_size=64, precision="auto")  # fmt: skip
    assert result["precision"] == "fp32"


def test_random_init_encoder_is_fixed_by_its_seed_and_leaves_the_global_state():
    before = torch.random.get_rng_state()
    a = random_init_encoder("convnet", small_images=True, in_channels=1, seed=3)
    b = random_init_encoder("convnet", small_images=True, in_channels=1, seed=3)
    c = random_init_encoder("convnet", small_images=True, in_channels=1, seed=4)
    assert torch.equal(torch.random.get_rng_state(), before)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb)
    assert not torch.equal(pa, pc)
