"""Images stored as a numpy ``.npy`` or ``.npz`` file.

Images are uint8 with shape ``(N, H, W)`` (grayscale), ``(N, C, H, W)`` or ``(N, H, W, C)``
with C 1 or 3. When both axis 1 and the last axis could be channels (H or W of 1 or 3),
``(N, C, H, W)`` wins. Labels are optional integers, -1 meaning unlabeled:

* ``.npz``: keys ``images`` or ``x`` for the images, ``labels`` or ``y`` for the labels and
  optionally ``classes`` (strings); key names are matched case-insensitively.
* ``.npy``: labels come from a sibling ``<stem>_labels.npy``, else ``labels.npy``.

Class names default to "0", "1", ... up to the largest label. A file has only the split
``train``; keep a test set in its own file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from byol.datasets.base import ImageData
from byol.errors import DataError

_IMAGE_KEYS = ("images", "x")
_LABEL_KEYS = ("labels", "y")


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"cannot read numpy file {path}: {error}") from error


def _images_nchw(array: np.ndarray, source: str) -> np.ndarray:
    shape = tuple(array.shape)
    if array.dtype != np.uint8:
        raise DataError(
            f"{source}: images must be uint8, got {array.dtype} with shape {shape}; convert "
            "floats in [0, 1] with (x * 255).round().astype(np.uint8)"
        )
    if array.ndim == 3 and array.shape[0] > 0:
        return array[:, None]
    if array.ndim == 4 and array.shape[0] > 0:
        if array.shape[1] in (1, 3):
            return array
        if array.shape[3] in (1, 3):
            return array.transpose(0, 3, 1, 2)
    raise DataError(
        f"{source}: images must have shape (N, H, W), (N, C, H, W) or (N, H, W, C) with N > 0 "
        f"and C 1 or 3, got {shape}"
    )


def _checked_labels(labels: np.ndarray, n: int, source: str) -> np.ndarray:
    if labels.ndim != 1 or labels.shape[0] != n or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{source}: labels must be {n} integers (one per image), got {labels.dtype} with "
            f"shape {tuple(labels.shape)}"
        )
    if labels.min() < -1:
        raise DataError(
            f"{source}: labels must be >= 0 (or -1 for unlabeled), found {labels.min()}"
        )
    return labels.astype(np.int64)


def load_array_file(name: str, path: Path, split: str = "train") -> ImageData:
    """Load images (and labels, when present) from a ``.npy`` or ``.npz`` file."""
    if split != "train":
        raise DataError(
            f"{path} holds a single split, not {split!r}; load a test set from its own file"
        )
    labels: np.ndarray | None = None
    classes: list[str] | None = None
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key.lower(): archive[key] for key in archive.files}
        except (OSError, ValueError, EOFError) as error:
            raise DataError(f"cannot read numpy archive {path}: {error}") from error
        image_key = next((k for k in _IMAGE_KEYS if k in arrays), None)
        if image_key is None:
            raise DataError(
                f"{path} has no 'images' or 'x' array (found: {', '.join(arrays) or 'none'})"
            )
        images = _images_nchw(arrays[image_key], f"{path}[{image_key}]")
        label_key = next((k for k in _LABEL_KEYS if k in arrays), None)
        if label_key is not None:
            labels = _checked_labels(arrays[label_key], len(images), f"{path}[{label_key}]")
        if "classes" in arrays:
            classes = [str(c) for c in arrays["classes"].reshape(-1)]
    else:
        images = _images_nchw(_load_npy(path), str(path))
        for sibling in (path.with_name(f"{path.stem}_labels.npy"), path.with_name("labels.npy")):
            if sibling.is_file() and sibling != path:
                labels = _checked_labels(_load_npy(sibling), len(images), str(sibling))
                break

    if labels is not None and labels.max() < 0:
        labels = None  # every item marked unlabeled
    if labels is not None:
        n_classes = int(labels.max()) + 1
        if classes is None:
            classes = [str(i) for i in range(n_classes)]
        elif len(classes) < n_classes:
            raise DataError(
                f"{path}: {len(classes)} class names but labels go up to {n_classes - 1}"
            )
    image_tensor = torch.from_numpy(np.ascontiguousarray(images))
    label_tensor = torch.from_numpy(labels) if labels is not None else None
    return ImageData(name, image_tensor, label_tensor, classes)
