"""scikit-learn's 8x8 handwritten digits: a tiny labeled set for smoke tests."""

from __future__ import annotations

import numpy as np
import torch

from byol.datasets.base import ImageData
from byol.errors import ConfigError

TRAIN_FRACTION = 0.8
SPLIT_SEED = 0


def load_digits(split: str) -> ImageData:
    """The 1,797 digits as 1 x 8 x 8 uint8 (0-16 scaled to 0-255).

    ``train`` is the first 80 % of a permutation with seed 0 and ``test`` the rest, each kept
    in the original order.
    """
    if split not in ("train", "test"):
        raise ConfigError(f"unknown split {split!r} for digits: use train or test")
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch = sklearn_load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    n_train = int(TRAIN_FRACTION * len(images))
    chosen = np.sort(order[:n_train] if split == "train" else order[n_train:])
    image_tensor = torch.from_numpy(np.ascontiguousarray(images[chosen][:, None]))
    label_tensor = torch.from_numpy(bunch.target[chosen].astype(np.int64))
    return ImageData("digits", image_tensor, label_tensor, [str(d) for d in range(10)])
