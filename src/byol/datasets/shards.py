"""WebDataset-style tar shards: ``--data 'shards/train-{000000..000127}.tar'``.

A shard is a plain (uncompressed) tar file; the files of one sample share a key, the member
path up to the first dot of its base name (``n01440764/img_0001.jpg`` and
``n01440764/img_0001.cls`` are one sample), as WebDataset writes them. A sample is used when it
has an image member (any of :data:`~byol.datasets.folder.IMAGE_EXTENSIONS`); its label is the
integer in its ``.cls`` member, when every sample has one.

Patterns: ``{000..127}`` ranges (zero padding kept), ``{a,b}`` alternatives and several
patterns joined by ``::``. Splits: the pattern is the ``train`` split; ``test`` (or ``val``) is
the same pattern with ``train`` replaced by ``test`` or ``val``
(``shards/val-{000000..000007}.tar``), when those shards exist.

Why an index and not a sequential stream: the tar headers are read once at start (a few
seconds per million samples, from headers only), after which every image is read with one
positional read (``os.pread``) from its shard. That makes a shard set behave like any other
indexed dataset: the run's data order is a permutation of (seed, epoch), a DDP rank reads only
its share of each batch (no image twice, none left out), and resume is exact. The shards must
be files (a local or network file system); object-store URLs are not read.
"""

from __future__ import annotations

import os
import re
import tarfile
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .base import ImageData
from .decode import GRAYSCALE_MODES, Source, image_header
from .folder import IMAGE_EXTENSIONS
from .streamed import StreamedImages, thread_map

__all__ = ["ShardReader", "expand_pattern", "is_shard_pattern", "load_shards"]

_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_CHOICE = re.compile(r"\{([^{}]*,[^{}]*)\}")
# Image headers read at start to choose RGB or grayscale and the typical size.
_HEADER_SAMPLE = 64


def is_shard_pattern(name: str) -> bool:
    """Whether ``name`` names tar shards (a ``.tar`` path or pattern)."""
    return all(part.strip().lower().endswith(".tar") for part in name.split("::"))


def expand_pattern(pattern: str) -> list[str]:
    """The shard paths of ``pattern``: ``{0..9}`` ranges, ``{a,b}`` choices, ``::`` lists."""
    if "::" in pattern:
        return [path for part in pattern.split("::") for path in expand_pattern(part.strip())]
    # The leftmost brace first, as shell brace expansion (and webdataset) order the names.
    found = [m for m in (_RANGE.search(pattern), _CHOICE.search(pattern)) if m is not None]
    if not found:
        return [pattern]
    match = min(found, key=lambda m: m.start())
    head, tail = pattern[: match.start()], pattern[match.end() :]
    if match.re is _CHOICE:
        return [path for choice in match.group(1).split(",")
                for path in expand_pattern(f"{head}{choice}{tail}")]  # fmt: skip
    low, high = match.group(1), match.group(2)
    if int(low) > int(high):
        raise DataError(f"shard pattern {pattern!r}: range {match.group(0)} is empty")
    width = len(low) if low.startswith("0") or len(low) == len(high) else 0
    return [path for number in range(int(low), int(high) + 1)
            for path in expand_pattern(f"{head}{str(number).zfill(width)}{tail}")]  # fmt: skip


class ShardReader(StreamedImages):
    """Reads sample images out of tar shards by index (one ``pread`` each); picklable."""

    _per_image = ("shard_of", "offsets", "lengths", "keys")

    def __init__(
        self,
        shards: list[str],
        shard_of: list[int],
        offsets: list[int],
        lengths: list[int],
        keys: list[str],
        mode: str,
        **options,
    ) -> None:
        super().__init__(mode, **options)
        self.shards, self.shard_of, self.offsets = shards, shard_of, offsets
        self.lengths, self.keys = lengths, keys
        # Shorter sides of the first samples' images (only those headers are read at start).
        self.sampled_sides: list[int] = []
        self._files: dict[int, int] = {}
        self._pid = -1

    def __getstate__(self) -> dict:
        # Open descriptors do not travel to worker processes; each opens its own.
        return {**self.__dict__, "_files": {}, "_pid": -1}

    def __len__(self) -> int:
        return len(self.offsets)

    def source(self, index: int) -> Source:
        if self._pid != os.getpid():
            self._files, self._pid = {}, os.getpid()
        shard = self.shard_of[index]
        if shard not in self._files:
            self._files[shard] = os.open(self.shards[shard], os.O_RDONLY)
        return os.pread(self._files[shard], self.lengths[index], self.offsets[index])

    def name(self, index: int) -> str:
        return f"{self.shards[self.shard_of[index]]}:{self.keys[index]}"

    def typical_side(self) -> int | None:
        """The median shorter side of the sampled images' headers."""
        return int(np.median(self.sampled_sides)) if self.sampled_sides else None


def load_shards(
    pattern: str,
    *,
    split: str = "train",
    image_size: int | None = None,
    crop_fraction: float = 1.0,
    strict: bool = False,
) -> ImageData:
    """The samples of the shards of ``pattern`` (its ``split``, see the module docstring) as a
    streamed :class:`ImageData`.

    At full resolution with ``image_size`` None (training crops are cut from the whole image),
    else every image shown at ``image_size`` (see :func:`byol.data.load_dataset`). Unreadable
    members are skipped with a warning naming them (``strict``: refused by name).
    """
    paths = expand_pattern(_split_pattern(pattern, split))
    samples: list[tuple[int, int, int, str, int | None]] = []
    bad: list[str] = []
    for number, path in enumerate(paths):
        samples += _index_shard(path, number, bad)
    if bad:
        if strict:
            raise DataError(f"unreadable sample in tar shards: {bad[0]}")
        shown = ", ".join(bad[:5]) + (", ..." if len(bad) > 5 else "")
        warnings.warn(f"skipped {len(bad)} unreadable sample(s): {shown}", stacklevel=3)
    if not samples:
        raise DataError(f"no image samples found in the tar shards {pattern!r}")
    labels = [sample[4] for sample in samples]
    label_tensor = (torch.tensor(labels, dtype=torch.int64)
                    if all(label is not None for label in labels) else None)  # fmt: skip
    shard_of, offsets, lengths, keys = (list(column) for column in zip(*(s[:4] for s in samples)))
    reader = ShardReader(paths, shard_of, offsets, lengths, keys, "RGB", size=image_size,
                         crop_fraction=crop_fraction, strict=strict)  # fmt: skip
    mode, reader.sampled_sides = _sample_headers(reader)
    reader.mode, reader.channels = mode, 1 if mode == "L" else 3
    classes = None
    if label_tensor is not None:
        classes = [str(c) for c in range(int(label_tensor.max()) + 1)]
    names = [reader.name(i) for i in range(len(reader))]
    return ImageData(pattern, None, label_tensor, classes, names, _reader=reader)


def _split_pattern(pattern: str, split: str) -> str:
    """The pattern of ``split``: the pattern itself for ``train``; for ``test`` / ``val``, the
    pattern with ``train`` replaced by that name (or the other one), whose shards all exist."""
    if split == "train":
        return pattern
    if split not in ("test", "val"):
        raise DataError(
            f"unknown split {split!r} for tar shards {pattern!r}: use train, test or val"
        )
    names = (split, "val" if split == "test" else "test")
    for name in names if "train" in pattern else ():
        candidate = pattern.replace("train", name)
        if all(Path(path).is_file() for path in expand_pattern(candidate)):
            return candidate
    raise DataError(
        f"tar shards {pattern!r} have no {split} split: held-out shards are found by replacing "
        f"'train' in the pattern with {' or '.join(repr(n) for n in names)}, and none of those "
        "shard sets exists"
    )


def _index_shard(path: str, number: int, bad: list[str]) -> list[tuple]:
    """(shard, offset, length, key, label) of every image sample of one shard."""
    if not Path(path).is_file():
        raise DataError(f"tar shard {path} does not exist (from the --data pattern)")
    images: dict[str, tuple[int, int]] = {}
    labels: dict[str, int | None] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                directory, _, base = member.name.rpartition("/")
                stem, dot, extension = base.partition(".")
                if not dot or stem.startswith("."):
                    continue
                key = f"{directory}/{stem}" if directory else stem
                extension = "." + extension.lower()
                if extension in IMAGE_EXTENSIONS and key not in images:
                    if member.size == 0:
                        bad.append(f"{path}:{member.name} (0 bytes)")
                        continue
                    images[key] = (member.offset_data, member.size)
                elif extension == ".cls":
                    labels[key] = _read_label(tar, member, path)
    except tarfile.TarError as error:
        raise DataError(
            f"tar shard {path} cannot be read as an uncompressed tar ({error}); shards must be "
            "plain .tar files"
        ) from error
    return [(number, offset, length, key, labels.get(key))
            for key, (offset, length) in images.items()]  # fmt: skip


def _read_label(tar: tarfile.TarFile, member: tarfile.TarInfo, path: str) -> int:
    handle = tar.extractfile(member)
    text = handle.read(64).decode("utf-8", "replace").strip() if handle else ""
    try:
        return int(text)
    except ValueError:
        raise DataError(
            f"tar shard {path}: {member.name} should hold an integer class, got {text!r}"
        ) from None


def _sample_headers(reader: ShardReader) -> tuple[str, list[int]]:
    """RGB or grayscale, and the shorter sides, from the headers of the first samples."""
    count = min(len(reader), _HEADER_SAMPLE)

    def header(index: int) -> tuple[str, int] | None:
        try:
            mode, width, height = image_header(reader.source(index))
            return mode, min(width, height)
        except Exception:  # unreadable samples are reported when they are decoded
            return None

    found = [h for h in thread_map(header, list(range(count))) if h is not None]
    if not found:
        return "RGB", []
    grayscale = all(mode in GRAYSCALE_MODES for mode, _ in found)
    return ("L" if grayscale else "RGB"), [side for _, side in found]
