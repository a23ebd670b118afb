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
  grayscale mode; EXIF orientation is applied.
* Resolution: by default (``image_size`` None) the images stay at their full resolution and
  are streamed: training crops are cut from the whole decoded file
  (:mod:`byol.datasets.decode`). With ``image_size`` the images are shown at a fixed size, the
  centre square of ``crop_fraction`` of the shorter side resized (bicubic) to ``image_size``
  (thumbnails, held in memory when they fit in 2 GiB).
* Unreadable files (no image header, zero bytes, a decompression bomb) are skipped with one
  warning naming them, or refused by name with ``strict``.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .base import ImageData
from .decode import GRAYSCALE_MODES, Source, decode_whole, image_header
from .streamed import StreamedImages, thread_map

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
# Decoded size above which a folder of thumbnails is streamed rather than held in memory.
IN_MEMORY_LIMIT_BYTES = 2 * 1024**3
_LISTED_BAD_FILES = 5


class FolderReader(StreamedImages):
    """Decodes the images of a streamed folder by index; picklable for DataLoader workers."""

    _per_image = ("paths",)

    def __init__(self, paths: list[str], mode: str, **options) -> None:
        super().__init__(mode, **options)
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def source(self, index: int) -> Source:
        return self.paths[index]

    def name(self, index: int) -> str:
        return self.paths[index]


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


def _header(path: Path) -> tuple[str | None, int, str]:
    """(mode, shorter side, "") from the file's header, or (None, 0, reason)."""
    try:
        if os.path.getsize(path) == 0:
            return None, 0, "empty file (0 bytes)"
        mode, width, height = image_header(str(path))
        return mode, min(width, height), ""
    except Exception as error:  # PIL raises many error types on malformed files
        return None, 0, str(error) or type(error).__name__


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
    crop_fraction: float = 1.0,
    strict: bool = False,
    in_memory: bool | None = None,
) -> ImageData:
    """Load an image folder (layout rules in the module docstring).

    ``image_size`` None keeps the full resolution: the folder is streamed (only headers are
    read now) and training cuts its crops from the whole files. With ``image_size``, every
    image is shown as the centre square of ``crop_fraction`` of its shorter side resized to
    ``image_size``; with ``in_memory=None`` such thumbnails are decoded into memory when they
    take at most 2 GiB, else streamed. Unreadable files are skipped with one warning, or raise
    a :class:`DataError` naming the first one when ``strict``.
    """
    if image_size is None and in_memory:
        raise DataError(
            f"image folder {folder}: full-resolution images vary in size and are streamed; "
            "give an image size to hold thumbnails in memory"
        )
    split_folder = resolve_split(folder, split)
    files = scan_images(split_folder)
    if not files:
        raise DataError(
            f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found in folder {split_folder}"
        )

    classes, file_labels = _class_layout(files, split_folder)
    readable = _readable_files(files, file_labels, split_folder, strict)
    paths, labels = readable.paths, readable.labels
    if in_memory is None:
        decoded_bytes = len(paths) * readable.channels * (image_size or 0) ** 2
        in_memory = image_size is not None and decoded_bytes <= IN_MEMORY_LIMIT_BYTES

    if not in_memory:
        _report_bad_files(split_folder, readable.bad, strict)
        reader = FolderReader(paths, readable.mode, size=image_size, crop_fraction=crop_fraction,
                              sides=readable.sides, strict=strict)  # fmt: skip
        label_tensor = torch.tensor(labels, dtype=torch.int64) if labels is not None else None
        return ImageData(name, None, label_tensor, classes, paths, _reader=reader)

    assert image_size is not None
    images, good, failures = _decode_in_memory(paths, image_size, readable.mode,
                                               readable.channels, crop_fraction)  # fmt: skip
    # One report for header and decode failures together, in the files' sorted order.
    order = {str(path): position for position, path in enumerate(files)}
    bad = sorted(readable.bad + failures, key=lambda item: order[item[0]])
    _report_bad_files(split_folder, bad, strict)
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


@dataclass
class _Readable:
    """The files whose headers read, with what the headers say."""

    paths: list[str]
    sides: list[int]
    labels: list[int] | None
    mode: str  # "L" when every header is grayscale, else "RGB"
    bad: list[tuple[str, str]]  # (path, reason) of the files skipped

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3


def _readable_files(
    files: list[Path], file_labels: list[int] | None, split_folder: Path, strict: bool
) -> _Readable:
    headers = thread_map(_header, files)
    bad = [(str(p), reason) for p, (mode, _, reason) in zip(files, headers, strict=True)
           if mode is None]  # fmt: skip
    keep = [i for i, (mode, _, _) in enumerate(headers) if mode is not None]
    if not keep:
        _report_bad_files(split_folder, bad, strict)
        raise DataError(f"none of the {len(files)} image files in {split_folder} can be read")
    grayscale = all(headers[i][0] in GRAYSCALE_MODES for i in keep)
    return _Readable(
        paths=[str(files[i]) for i in keep], sides=[headers[i][1] for i in keep],
        labels=[file_labels[i] for i in keep] if file_labels is not None else None,
        mode="L" if grayscale else "RGB", bad=bad,
    )  # fmt: skip


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
    paths: list[str], size: int, mode: str, channels: int, crop_fraction: float
) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Decode every file into one array: (images, rows decoded, (path, reason) of failures)."""
    images = np.empty((len(paths), channels, size, size), dtype=np.uint8)

    def decode_into(row: int) -> str | None:
        try:
            images[row] = decode_whole(paths[row], size, mode, crop_fraction)
        except Exception as error:  # PIL raises many error types on malformed files
            return str(error) or type(error).__name__
        return None

    reasons = thread_map(decode_into, list(range(len(paths))))
    failures = [(paths[row], reason) for row, reason in enumerate(reasons) if reason is not None]
    return images, [row for row, reason in enumerate(reasons) if reason is None], failures
