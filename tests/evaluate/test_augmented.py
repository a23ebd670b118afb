"""The augmented linear probe (byol.evaluate.augmented)."""

from __future__ import annotations

import torch
from torch import nn

from byol.evaluate import (
    PAPER_LEARNING_RATES,
    linear_probe_augmented,
)

from .helpers import MEAN, STD


def test_linear_probe_augmented_on_colour_classes():
    # Class = dominant colour channel; a mean-colour encoder makes it linearly separable under
    # any crop or flip.
    generator = torch.Generator().manual_seed(0)

    def make(n_per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(3).repeat_interleave(n_per_class)
        images = torch.randint(0, 90, (labels.numel(), 3, 8, 8), generator=generator)
        images[torch.arange(labels.numel()), labels] += 160
        return images.to(torch.uint8), labels

    train_images, train_labels = make(20)
    test_images, test_labels = make(10)
    encoder = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    encoder.train()
    for crop in ("resized", "pad"):
        result = linear_probe_augmented(
            encoder,
            train_images,
            train_labels,
            test_images,
            test_labels,
            mean=MEAN,
            std=STD,
            size=8,
            crop=crop,
            epochs=4,
            batch_size=16,
        )
        assert result["top1"] > 0.95, result
        assert result["top5"] is None  # 3 classes
        assert result["learning_rate"] in PAPER_LEARNING_RATES
        assert result["n_val"] == 6 and result["n_test"] == 30 and result["crop"] == crop
        assert len(result["val_top1_by_lr"]) == 5
        assert encoder.training
