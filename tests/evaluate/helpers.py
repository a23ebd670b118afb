"""Data shared by the evaluation tests: Gaussian blobs and tiny image batches."""

from __future__ import annotations

import torch

MEAN = (0.5, 0.4, 0.3)
STD = (0.25, 0.2, 0.3)


def blobs(n_per_class: int, num_classes: int, dim: int, spread: float, seed: int):
    """Gaussian blobs with unit noise around class centres at distance ~``spread``."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=generator)
    centres = spread * centres / centres.norm(dim=1, keepdim=True)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    features = centres[labels] + torch.randn(labels.numel(), dim, generator=generator)
    order = torch.randperm(labels.numel(), generator=generator)
    return features[order], labels[order]


def split_blobs(num_classes: int = 6, spread: float = 12.0, seed: int = 0):
    features, labels = blobs(120, num_classes, 32, spread, seed)
    # Offset and scale far from unit so standardisation matters.
    features = features * 7.0 + 3.0
    n_train = 80 * num_classes
    return features[:n_train], labels[:n_train], features[n_train:], labels[n_train:]


def make_images(n: int, side: int = 4, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, side, side), generator=generator, dtype=torch.uint8)


def normalised(images: torch.Tensor) -> torch.Tensor:
    x = images.float() / 255.0
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
