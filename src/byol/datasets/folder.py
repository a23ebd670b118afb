"""A folder of image files: scanning, labels from class sub-folders, decoding and streaming.

Layout rules (see :func:`load_folder`):

* Image files have one of :data:`IMAGE_EXTENSIONS` (any case); other files, and names
  starting with a dot, are ignored.
* Splits: if the folder has a ``train/`` sub-folder and a ``test/`` or ``val/`` one, split
  ``train`` reads ``train/`` and ``test`` / ``val`` read ``test/`` or ``val/`` (either one
  when only one exists). Otherwise the whole folder is split ``train`` and there is no other.
* Labels: when every image sits exactly one level down and there are at least two such
  sub-folders, the sub-folder names are the classes (sorted, as torchvision's ImageFolder);
  any other layout (flat, mixed or deeper) is unlabeled.
* Every image is converted to RGB, or to 8-bit grayscale when all headers report a
  grayscale mode; EXIF orientation is applied; the largest centred square is cut out and
  resized (bicubic) to ``image_size`` x ``image_size``, so the shorter side becomes
  ``image_size`` and the longer one is centre-cropped. Smaller images are upscaled.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps

from byol.datasets.base import ImageData
from byol.errors import DataError

IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".webp",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
)
DEFAULT_IMAGE_SIZE = 64
# Decoded size above which a folder is streamed from disk rather than held in memory.
IN_MEMORY_LIMIT_BYTES = 2 * 1024**3
_GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_LISTED_BAD_FILES = 5

_T = TypeVar("_T")
_R = TypeVar("_R")


def _thread_map(function: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
    # PIL releases the GIL while decoding and resizing, so threads give a real speed-up.
    workers = min(8, os.cpu_count() or 1)
    if workers == 1 or len(items) < 16:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(function, items))


def decode_image(path: str, size: int, mode: str) -> np.ndarray:
    """Decode ``path`` to a uint8 ``(C, size, size)`` array in ``mode`` ("L" or "RGB")."""
    with Image.open(path) as source:
        # JPEG can decode at a reduced scale that still covers size x size: much faster.
        source.draft(mode, (size, size))
        image = ImageOps.exif_transpose(source)
        if image.mode in _SIXTEEN_BIT_MODES:
            # PIL's own conversion clips 16-bit values at 255 instead of rescaling them.
            image = Image.fromarray((np.asarray(image, dtype=np.uint32) // 257).astype(np.uint8))
        if image.mode != mode:
            image = image.convert(mode)
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) / 2, (height - side) / 2
        image = image.resize(
            (size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side)
        )
        array = np.array(image, dtype=np.uint8)  # a writable copy: torch wants one
    return array[None] if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1))


class FolderReader:
    """Decodes the images of a streamed folder by index; picklable for DataLoader workers."""

    def __init__(self, paths: list[str], size: int, mode: str) -> None:
        self.paths = paths
        self.size = size
        self.mode = mode
        self.channels = 1 if mode == "L" else 3
        self.image_size = (size, size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.paths[index]
        try:
            return torch.from_numpy(decode_image(path, self.size, self.mode))
        except Exception as error:  # PIL raises many error types on malformed files
            raise DataError(
                f"cannot decode image {path}: {error}. A streamed folder checks only file "
                "headers up front; remove or replace this file."
            ) from error

    def read_many(self, indices: Sequence[int]) -> torch.Tensor:
        """The images at ``indices`` as a uint8 ``(B, C, H, W)`` tensor."""
        if not indices:
            return torch.empty(0, self.channels, self.size, self.size, dtype=torch.uint8)
        return torch.stack(_thread_map(self.__getitem__, list(indices)))

    def subset(self, indices: Sequence[int]) -> FolderReader:
        return FolderReader([self.paths[i] for i in indices], self.size, self.mode)


def resolve_split(folder: Path, split: str) -> Path:
    """The folder that holds ``split`` (see the module docstring)."""
    subfolders = {p.name.lower(): p for p in folder.iterdir() if p.is_dir()}
    held_out = [subfolders[name] for name in ("test", "val") if name in subfolders]
    if "train" in subfolders and held_out:
        if split == "train":
            return subfolders["train"]
        if split in ("test", "val"):
            return subfolders.get(split, held_out[0])
        raise DataError(
            f"unknown split {split!r} for image folder {folder}: use train, test or val"
        )
    if split == "train":
        return folder
    raise DataError(
        f"image folder {folder} has no train/ and test/ (or val/) sub-folders, so it has "
        f"only the split 'train' (all images), not {split!r}"
    )


def scan_images(folder: Path) -> list[Path]:
    """Image files under ``folder``, sorted by their path components."""
    found: list[Path] = []
    visited: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:  # a symlink loop: this directory was already read
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for filename in filenames:
            if not filename.startswith(".") and filename.lower().endswith(IMAGE_EXTENSIONS):
                found.append(Path(dirpath, filename))
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def _header_mode(path: Path) -> tuple[str | None, str]:
    try:
        with Image.open(path) as image:
            return image.mode, ""
    except Exception as error:  # PIL raises many error types on malformed files
        return None, str(error) or type(error).__name__


def _report_bad_files(folder: Path, bad: list[tuple[str, str]], strict: bool) -> None:
    if not bad:
        return
    first_path, first_reason = bad[0]
    if strict:
        raise DataError(f"unreadable image file {first_path}: {first_reason}")
    listed = ", ".join(path for path, _ in bad[:_LISTED_BAD_FILES])
    more = ", ..." if len(bad) > _LISTED_BAD_FILES else ""
    warnings.warn(
        f"skipped {len(bad)} unreadable image file(s) in {folder}: {listed}{more} "
        f"(first error: {first_reason}); pass strict=True (--strict) to fail instead",
        stacklevel=4,
    )


def load_folder(
    name: str,
    folder: Path,
    *,
    split: str = "train",
    image_size: int | None = None,
    strict: bool = False,
    in_memory: bool | None = None,
) -> ImageData:
    """Load an image folder (layout rules in the module docstring).

    ``image_size`` defaults to 64. With ``in_memory=None`` the images are decoded into memory
    when they take at most 2 GiB, else streamed: then only headers are read now and files
    are decoded by index later. Unreadable files are skipped with one warning, or raise a
    :class:`DataError` naming the first one when ``strict``.
    """
    size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
    split_folder = resolve_split(folder, split)
    files = scan_images(split_folder)
    if not files:
        raise DataError(
            f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found in folder {split_folder}"
        )

    classes, file_labels = _class_layout(files, split_folder)
    headers = _thread_map(_header_mode, files)
    bad = [
        (str(p), reason) for p, (mode, reason) in zip(files, headers, strict=True) if mode is None
    ]
    keep = [i for i, (mode, _) in enumerate(headers) if mode is not None]
    if not keep:
        _report_bad_files(split_folder, bad, strict)
        raise DataError(f"none of the {len(files)} image files in {split_folder} can be read")
    grayscale = all(headers[i][0] in _GRAYSCALE_MODES for i in keep)
    mode = "L" if grayscale else "RGB"
    channels = 1 if grayscale else 3

    paths = [str(files[i]) for i in keep]
    labels = [file_labels[i] for i in keep] if file_labels is not None else None
    decoded_bytes = len(paths) * channels * size * size
    if in_memory is None:
        in_memory = decoded_bytes <= IN_MEMORY_LIMIT_BYTES

    if not in_memory:
        _report_bad_files(split_folder, bad, strict)
        reader = FolderReader(paths, size, mode)
        label_tensor = torch.tensor(labels, dtype=torch.int64) if labels is not None else None
        return ImageData(name, None, label_tensor, classes, paths, _reader=reader)

    images, good, failures = _decode_in_memory(paths, size, mode, channels)
    bad += failures
    # One report for header and decode failures together, in the files' sorted order.
    order = {str(path): position for position, path in enumerate(files)}
    _report_bad_files(split_folder, sorted(bad, key=lambda item: order[item[0]]), strict)
    if not good:
        raise DataError(f"none of the {len(files)} image files in {split_folder} can be read")
    image_tensor = torch.from_numpy(images if len(good) == len(paths) else images[good])
    return ImageData(
        name,
        image_tensor,
        torch.tensor([labels[r] for r in good], dtype=torch.int64) if labels is not None else None,
        classes,
        [paths[r] for r in good],
    )


def _class_layout(files: list[Path], split_folder: Path) -> tuple[list[str] | None, list | None]:
    """Class names and each file's label when every file sits in one of at least two class
    sub-folders; (None, None) for an unlabeled folder."""
    relative_parts = [p.relative_to(split_folder).parts for p in files]
    class_dirs = sorted({parts[0] for parts in relative_parts if len(parts) == 2})
    if not (all(len(parts) == 2 for parts in relative_parts) and len(class_dirs) >= 2):
        return None, None
    class_index = {c: i for i, c in enumerate(class_dirs)}
    return class_dirs, [class_index[parts[0]] for parts in relative_parts]


def _decode_in_memory(
    paths: list[str], size: int, mode: str, channels: int
) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Decode every file into one array: (images, rows decoded, (path, reason) of failures)."""
    images = np.empty((len(paths), channels, size, size), dtype=np.uint8)

    def decode_into(row: int) -> str | None:
        try:
            images[row] = decode_image(paths[row], size, mode)
        except Exception as error:  # PIL raises many error types on malformed files
            return str(error) or type(error).__name__
        return None

    reasons = _thread_map(decode_into, list(range(len(paths))))
    failures = [(paths[row], reason) for row, reason in enumerate(reasons) if reason is not None]
    return images, [row for row, reason in enumerate(reasons) if reason is None], failures
