"""The :class:`ImageData` container every source is turned into."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader

from byol.errors import DataError

# Above this many images, mean_std of a streamed dataset estimates from a fixed random sample.
MEAN_STD_SAMPLE = 10_000
# Images per step when summing statistics, so big in-memory sets never get a float copy.
_STATS_CHUNK = 1024
# Side of the thumbnails the statistics of a full-resolution stream are computed on.
_STATS_SIDE = 64


class ImageReader(Protocol):
    """Decodes images of a streamed dataset by index (:class:`byol.datasets.streamed.
    StreamedImages`: folders and tar shards). ``image_size`` is None at full resolution."""

    channels: int

    @property
    def image_size(self) -> tuple[int, int] | None: ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> torch.Tensor: ...

    def read_many(self, indices: Sequence[int]) -> torch.Tensor: ...

    def subset(self, indices: Sequence[int]) -> ImageReader: ...

    def at_size(self, size: int, crop_fraction: float = 1.0) -> ImageReader: ...

    def typical_side(self) -> int | None: ...

    def crops(self, epoch: int, index: int, sampler: Any, size: int) -> torch.Tensor: ...


def _as_index_tensor(indices: Any) -> torch.Tensor:
    """Indices as a 1-D int64 tensor (accepts tensors, numpy arrays, lists, ranges)."""
    if isinstance(indices, torch.Tensor):
        index = indices.to(torch.int64)
    else:
        index = torch.as_tensor(np.asarray(indices, dtype=np.int64))
    return index.reshape(-1)


def _stack_images(items: list[torch.Tensor]) -> torch.Tensor:
    # A module-level function so DataLoader workers can pickle it under any start method.
    return torch.stack(items)


class _IndexBatches:
    """Turns the caller's index tensors into the lists a DataLoader batch_sampler yields."""

    def __init__(self, index_batches: Iterable[torch.Tensor]) -> None:
        self._index_batches = index_batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._index_batches:
            yield _as_index_tensor(batch).tolist()


class _EpochBatches:
    """(epoch, index tensor) pairs as the DataLoader's lists of (epoch, index) keys."""

    def __init__(self, keyed_batches: Iterable[tuple[int, torch.Tensor]]) -> None:
        self._keyed_batches = keyed_batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for epoch, batch in self._keyed_batches:
            yield [(int(epoch), index) for index in _as_index_tensor(batch).tolist()]


class _CropPairs:
    """A map-style dataset over (epoch, index) keys: the reader's training crops of each."""

    def __init__(self, reader: ImageReader, sampler: Any, size: int) -> None:
        self.reader, self.sampler, self.size = reader, sampler, size

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        epoch, index = key
        return self.reader.crops(epoch, index, self.sampler, self.size)


@dataclass(eq=False)
class ImageData:
    """A dataset as uint8 images, either held in memory or decoded from files on demand.

    ``images`` is ``(N, C, H, W)`` uint8 and contiguous when the data is in memory; it is
    ``None`` for a streamed image folder, whose files a private reader decodes by index
    (:meth:`get`, :meth:`batches`). ``labels`` is ``(N,)`` int64 or ``None`` when unlabeled;
    -1 marks an unlabeled item inside a partly labeled set (STL-10 ``train+unlabeled``).
    ``paths`` lists the source file of every image for folder datasets, in sorted order.
    """

    name: str
    images: torch.Tensor | None
    labels: torch.Tensor | None
    classes: list[str] | None
    paths: list[str] | None = None
    _reader: ImageReader | None = field(default=None, repr=False)
    _stats: tuple[tuple[float, ...], tuple[float, ...]] | None = field(
        default=None, init=False, repr=False
    )

    def __post_init__(self) -> None:
        if (self.images is None) == (self._reader is None):
            raise ValueError("ImageData needs exactly one of images or a reader")
        if self.images is not None:
            images = self.images
            if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
                raise DataError(
                    f"{self.name}: images must be uint8 (N, C, H, W) with C in 1 or 3, got "
                    f"{images.dtype} {tuple(images.shape)}"
                )
            self.images = images.contiguous()
        if self.labels is not None:
            labels = self.labels.to(torch.int64).reshape(-1)
            if labels.shape[0] != len(self):
                raise DataError(f"{self.name}: {labels.shape[0]} labels for {len(self)} images")
            self.labels = labels
        if self.paths is not None and len(self.paths) != len(self):
            raise DataError(f"{self.name}: {len(self.paths)} paths for {len(self)} images")

    def __len__(self) -> int:
        if self.images is not None:
            return int(self.images.shape[0])
        assert self._reader is not None
        return len(self._reader)

    @property
    def in_memory(self) -> bool:
        """Whether all images are held in :attr:`images` (else decoded from files)."""
        return self.images is not None

    @property
    def channels(self) -> int:
        """Number of channels: 1 (grayscale) or 3 (RGB)."""
        if self.images is not None:
            return int(self.images.shape[1])
        assert self._reader is not None
        return self._reader.channels

    @property
    def image_size(self) -> tuple[int, int] | None:
        """Image height and width in pixels; None for full-resolution files (sizes vary)."""
        if self.images is not None:
            return int(self.images.shape[2]), int(self.images.shape[3])
        assert self._reader is not None
        return self._reader.image_size

    @property
    def full_resolution(self) -> bool:
        """Whether the images are files at their own, varying, resolution (a streamed folder
        or shards without a fixed size): training crops them in the loader
        (:meth:`crop_batches`), everything else shows them whole with :meth:`at_size`."""
        return self.image_size is None

    def typical_side(self) -> int | None:
        """The median shorter side of the stored images (of the files, when streamed)."""
        if self.images is not None:
            return int(min(self.images.shape[2:]))
        assert self._reader is not None
        return self._reader.typical_side()

    def at_size(self, size: int, crop_fraction: float = 1.0) -> ImageData:
        """Full-resolution files shown whole at ``size`` x ``size`` (the centre square of
        ``crop_fraction`` of the shorter side, resized); other data is returned as it is
        (whole images are resized on the device by the evaluators)."""
        if not self.full_resolution:
            return self
        assert self._reader is not None
        reader = self._reader.at_size(size, crop_fraction)
        return ImageData(self.name, None, self.labels, self.classes, self.paths, _reader=reader)

    def crop_batches(
        self,
        keyed_batches: Iterable[tuple[int, torch.Tensor]],
        sampler: Any,
        size: int,
        *,
        num_workers: int = 2,
        pin_memory: bool = False,
        prefetch_factor: int = 2,
    ) -> Iterator[torch.Tensor]:
        """Training crops of full-resolution files: one uint8 ``(B, V, C, size, size)`` batch
        per ``(epoch, indices)`` pair, in order.

        Every image's V views are cut from its whole decoded file as ``sampler`` draws them
        from (seed, epoch, index) (:class:`byol.augment.crops.CropSampler`), by ``num_workers``
        DataLoader processes with ``prefetch_factor`` batches each in flight: memory is bounded
        by batch x workers x prefetch, not by the dataset. ``pin_memory`` only with CUDA.
        """
        if not self.full_resolution:
            raise DataError(f"{self.name}: crop_batches needs full-resolution files")
        assert self._reader is not None
        loader = DataLoader(
            _CropPairs(self._reader, sampler, size),  # type: ignore[arg-type]
            batch_sampler=_EpochBatches(keyed_batches),  # type: ignore[arg-type]
            num_workers=num_workers,
            collate_fn=_stack_images,
            pin_memory=pin_memory and torch.cuda.is_available(),
            prefetch_factor=prefetch_factor if num_workers > 0 else None,
        )
        yield from loader

    def get(self, indices: torch.Tensor) -> torch.Tensor:
        """The images at ``indices`` as a uint8 ``(B, C, H, W)`` tensor."""
        index = _as_index_tensor(indices)
        if self.images is not None:
            return self.images[index]
        assert self._reader is not None
        return self._reader.read_many(index.tolist())

    def batches(
        self,
        index_batches: Iterable[torch.Tensor],
        *,
        num_workers: int = 2,
        pin_memory: bool = False,
        prefetch_factor: int = 2,
    ) -> Iterator[torch.Tensor]:
        """Yield one uint8 ``(B, C, H, W)`` batch per index tensor, in the given order.

        In-memory data is indexed directly (no workers). A streamed folder is decoded by a
        torch DataLoader whose batch_sampler is ``index_batches``, with ``num_workers``
        worker processes and ``prefetch_factor`` batches in flight per worker.
        ``pin_memory`` is honoured only when CUDA is available.
        """
        pin = pin_memory and torch.cuda.is_available()
        if self.images is not None:
            for batch in index_batches:
                images = self.images[_as_index_tensor(batch)]
                yield images.pin_memory() if pin else images
            return
        loader = DataLoader(
            self._reader,  # type: ignore[arg-type]
            batch_sampler=_IndexBatches(index_batches),  # type: ignore[arg-type]
            num_workers=num_workers,
            collate_fn=_stack_images,
            pin_memory=pin,
            prefetch_factor=prefetch_factor if num_workers > 0 else None,
        )
        yield from loader

    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and standard deviation of the pixels, in [0, 1] units.

        Exact (population std) for in-memory data; for a streamed folder estimated from a
        fixed random sample of at most 10,000 images (seed 0), so repeated calls agree
        (full-resolution files are read as 64 px thumbnails for it).
        """
        if self._stats is None:
            if self.images is not None:
                chunks = (
                    self.images[start : start + _STATS_CHUNK]
                    for start in range(0, len(self), _STATS_CHUNK)
                )
            else:
                source = self.at_size(_STATS_SIDE) if self.full_resolution else self
                n = len(self)
                sample = torch.arange(n)
                if n > MEAN_STD_SAMPLE:
                    generator = torch.Generator().manual_seed(0)
                    sample = torch.randperm(n, generator=generator)[:MEAN_STD_SAMPLE].sort()[0]
                chunks = (
                    source.get(sample[start : start + _STATS_CHUNK // 4])
                    for start in range(0, len(sample), _STATS_CHUNK // 4)
                )
            self._stats = _channel_mean_std(chunks, self.channels)
        return self._stats

    def subset(self, indices: Any) -> ImageData:
        """A new ImageData with the items at ``indices`` (same name and classes)."""
        index = _as_index_tensor(indices)
        labels = self.labels[index] if self.labels is not None else None
        paths = [self.paths[i] for i in index.tolist()] if self.paths is not None else None
        if self.images is not None:
            return ImageData(self.name, self.images[index], labels, self.classes, paths)
        assert self._reader is not None
        reader = self._reader.subset(index.tolist())
        return ImageData(self.name, None, labels, self.classes, paths, _reader=reader)


def _channel_mean_std(
    chunks: Iterable[torch.Tensor], channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # Per-channel histograms of the 256 byte values give exact sums without float error.
    histograms = torch.zeros(channels, 256, dtype=torch.int64)
    for chunk in chunks:
        for c in range(channels):
            histograms[c] += torch.bincount(chunk[:, c].reshape(-1), minlength=256)
    counts = histograms.to(torch.float64)
    values = torch.arange(256, dtype=torch.float64) / 255.0
    total = counts.sum(dim=1)
    if torch.any(total == 0):
        raise DataError("cannot compute mean/std of an empty dataset")
    mean = (counts * values).sum(dim=1) / total
    second_moment = (counts * values**2).sum(dim=1) / total
    std = (second_moment - mean**2).clamp_min(0.0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())
