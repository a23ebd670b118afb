"""Dataset sources turned into uint8 image tensors: :func:`load_dataset` and :class:`ImageData`.

Sources:

* ``fashion-mnist`` - IDX files from ``root`` or Debian's ``dataset-fashion-mnist`` package
  (:mod:`byol.datasets.fashion_mnist`).
* ``cifar10``, ``cifar100``, ``stl10`` - torchvision's file layout under ``root`` (default
  ``./data``), downloaded there when ``download=True`` (:mod:`byol.datasets.torchvision_sets`).
* ``digits`` - scikit-learn's 8x8 digits, for smoke tests (:mod:`byol.datasets.digits`).
* a path to a folder of images (:mod:`byol.datasets.folder`), or to a ``.npy`` / ``.npz``
  file of uint8 images (:mod:`byol.datasets.arrays`).
* WebDataset-style tar shards: a ``.tar`` path or a brace pattern such as
  ``shards/train-{000000..000127}.tar`` (:mod:`byol.datasets.shards`).

Folders and shards are read at full resolution and streamed unless ``image_size`` asks for
fixed-size thumbnails.

Named sources take precedence over paths, so write ``./digits`` for a folder called digits.
Names are matched ignoring case, ``-`` and ``_`` (``CIFAR-10`` works).
"""

from __future__ import annotations

from pathlib import Path

from byol.datasets.base import ImageData
from byol.errors import ConfigError, DataError

__all__ = ["DATASETS", "DEFAULT_DATA_ROOT", "ImageData", "default_pretrain_split", "load_dataset"]

DATASETS: tuple[str, ...] = ("fashion-mnist", "cifar10", "cifar100", "stl10", "digits")
# Where torchvision sources are looked for (and downloaded to) when no root is given.
DEFAULT_DATA_ROOT = Path("data")


def _canonical_name(name: str) -> str | None:
    key = name.strip().lower().replace("-", "").replace("_", "")
    return next((d for d in DATASETS if d.replace("-", "") == key), None)


def default_pretrain_split(name: str) -> str:
    """The split to pre-train on: ``train``, except STL-10's ``train+unlabeled``."""
    return "train+unlabeled" if _canonical_name(name) == "stl10" else "train"


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    split: str = "train",
    download: bool = False,
    image_size: int | None = None,
    crop_fraction: float = 1.0,
    strict: bool = False,
    in_memory: bool | None = None,
) -> ImageData:
    """Load a named dataset, an image folder or a ``.npy`` / ``.npz`` file as uint8 images.

    Args:
        name: one of :data:`DATASETS`, or a path to an image folder or numpy file.
        root: folder holding named datasets (fashion-mnist falls back to the Debian package
            location; torchvision sources default to ``./data``). Ignored for paths.
        split: ``train`` or ``test``; STL-10 also ``unlabeled`` and ``train+unlabeled``; image
            folders ``test`` / ``val`` when they have such sub-folders.
        download: let torchvision fetch CIFAR / STL-10 into ``root`` when missing.
        image_size: for image folders and shards, show every image as a square of this side
            (the centre square of ``crop_fraction`` of its shorter side, resized); None (the
            default) keeps their full resolution, streamed. Other sources keep their native
            size (the augmentations resize).
        crop_fraction: see ``image_size`` (1.0: the whole centre square; 0.875: the
            reference's evaluation crop).
        strict: for image folders and shards, raise on the first unreadable file instead of
            skipping it.
        in_memory: for image folders with an ``image_size``, hold decoded images in memory
            (True), stream them from disk (False) or decide by size, up to 2 GiB in memory
            (None). Full-resolution folders and shards are streamed; other sources are always
            in memory.

    Raises:
        DataError: the data is missing, empty, unreadable or of the wrong type or shape, or
            an image folder / numpy file has no such split.
        ConfigError: ``image_size`` is not positive, or ``split`` is unknown for a named source.
    """
    if image_size is not None and (isinstance(image_size, bool) or image_size < 1):
        raise ConfigError(f"image_size must be a positive integer, got {image_size!r}")
    root_path = Path(root).expanduser() if root is not None else None
    canonical = _canonical_name(name)
    if canonical == "fashion-mnist":
        from byol.datasets.fashion_mnist import load_fashion_mnist

        return load_fashion_mnist(root_path, split)
    if canonical == "digits":
        from byol.datasets.digits import load_digits

        return load_digits(split)
    if canonical is not None:
        from byol.datasets.torchvision_sets import load_torchvision

        return load_torchvision(canonical, root_path or DEFAULT_DATA_ROOT, split, download)

    from byol.datasets.shards import is_shard_pattern

    if is_shard_pattern(name):
        from byol.datasets.shards import load_shards

        return load_shards(name, split=split, image_size=image_size,
                           crop_fraction=crop_fraction, strict=strict)  # fmt: skip
    path = Path(name).expanduser()
    if path.is_dir():
        from byol.datasets.folder import load_folder

        return load_folder(
            str(path),
            path,
            split=split,
            image_size=image_size,
            crop_fraction=crop_fraction,
            strict=strict,
            in_memory=in_memory,
        )
    if path.is_file():
        if path.suffix.lower() in (".npy", ".npz"):
            from byol.datasets.arrays import load_array_file

            return load_array_file(str(path), path, split)
        raise DataError(
            f"{path} is a file but not a .npy or .npz array; pass a folder of images, a numpy "
            "file or one of: " + ", ".join(DATASETS)
        )
    raise DataError(
        f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}, or a path to an existing "
        "folder of images or a .npy / .npz file"
    )
