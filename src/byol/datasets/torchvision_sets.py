"""CIFAR-10, CIFAR-100 and STL-10 through torchvision.datasets, as one uint8 tensor each.

The files live in ``root/<folder>`` with torchvision's layout (:data:`LAYOUT`); ``root`` may
also be that folder itself. STL-10 ``train+unlabeled`` keeps labels, with -1 for the 100,000
unlabeled images; ``unlabeled`` alone has ``labels=None``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from byol.datasets.base import ImageData
from byol.errors import ConfigError, DataError

LAYOUT: dict[str, tuple[str, tuple[str, ...]]] = {
    "cifar10": (
        "cifar-10-batches-py",
        (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"),
    ),
    "cifar100": ("cifar-100-python", ("train", "test", "meta")),
    "stl10": (
        "stl10_binary",
        ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "unlabeled_X.bin"),
    ),
}
SPLITS = {
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "stl10": ("train", "test", "unlabeled", "train+unlabeled"),
}


def _construct(name: str, root: Path, split: str, download: bool) -> Any:
    from torchvision import datasets

    if name == "stl10":
        return datasets.STL10(str(root), split=split, download=download)
    dataset_class = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    return dataset_class(str(root), train=split == "train", download=download)


def load_torchvision(name: str, root: Path, split: str, download: bool) -> ImageData:
    """Load ``name`` (cifar10, cifar100 or stl10) from ``root``, downloading if asked."""
    if split not in SPLITS[name]:
        raise ConfigError(f"unknown split {split!r} for {name}: use {', '.join(SPLITS[name])}")
    folder_name, files = LAYOUT[name]
    if root.name == folder_name:
        root = root.parent
    folder = root / folder_name
    missing = [f for f in files if not (folder / f).is_file()]
    if missing and not download:
        if not folder.is_dir():
            absent = "the folder does not exist"
        elif len(missing) == len(files):
            absent = "none of them is there"
        else:
            absent = "missing: " + ", ".join(missing)
        raise DataError(
            f"{name} not found: expected the folder {folder.resolve()} with the files "
            f"{', '.join(files)} ({absent}). Pass --download to fetch it "
            f"into {root.resolve()}, or --data-root pointing to the folder that contains "
            f"{folder_name}/."
        )
    try:
        dataset = _construct(name, root, split, download)
    except RuntimeError as error:  # torchvision's "not found or corrupted" (checksum mismatch)
        raise DataError(
            f"{name} files in {folder.resolve()} are incomplete or corrupt ({error}); delete "
            "the folder and pass --download to fetch them again"
        ) from error
    except OSError as error:  # network failures while downloading
        raise DataError(f"downloading {name} into {root.resolve()} failed: {error}") from error

    if name == "stl10":
        images = torch.from_numpy(np.ascontiguousarray(dataset.data))
        labels = torch.from_numpy(np.asarray(dataset.labels).astype(np.int64))
        labels_or_none = None if split == "unlabeled" else labels
        classes = list(getattr(dataset, "classes", [])) or None
    else:
        # torchvision keeps CIFAR as (N, H, W, C); we want channels first.
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
        labels_or_none = torch.tensor(dataset.targets, dtype=torch.int64)
        classes = list(dataset.classes)
    return ImageData(name, images, labels_or_none, classes)
