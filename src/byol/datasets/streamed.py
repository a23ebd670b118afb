"""Images decoded from files on demand: the reader behind streamed folders and tar shards.

A :class:`StreamedImages` reader knows where each image is (:meth:`~StreamedImages.source`)
and how to show it:

* with a fixed geometry (``size`` and ``crop_fraction``, :meth:`~StreamedImages.at_size`),
  ``reader[i]`` is the whole image as a uint8 ``(C, size, size)`` tensor (evaluation, the k-NN
  monitor, embedding, thumbnails);
* at full resolution (``size`` None), :meth:`~StreamedImages.crops` cuts the training views of
  image ``i`` in epoch ``e`` from the full decoded file, as a :class:`~byol.augment.crops.
  CropSampler` draws them from (seed, e, i).

A file that fails to decode while streaming (a truncated JPEG, say, whose header was fine) is
reported once by name and replaced by the next readable image, so a long run is not lost to one
bad file; with ``strict`` it raises :class:`~byol.errors.DataError` naming the file instead.
Readers are picklable, for DataLoader workers.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import torch

from ..errors import DataError
from .decode import Source, decode_crops, decode_whole

__all__ = ["StreamedImages", "thread_map"]

_T = TypeVar("_T")
_R = TypeVar("_R")
# How many following images are tried in place of one that fails to decode.
_REPLACEMENT_TRIES = 16


def thread_map(function: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
    """``map`` over threads: PIL releases the GIL while decoding and resizing."""
    workers = min(8, os.cpu_count() or 1)
    if workers == 1 or len(items) < 16:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(function, items))


class StreamedImages:
    """Images read by index from ``count`` sources; subclasses define :meth:`source` and
    :meth:`name`, and keep per-image data in list attributes named in ``_per_image``."""

    _per_image: tuple[str, ...] = ()

    def __init__(
        self,
        mode: str,
        *,
        size: int | None = None,
        crop_fraction: float = 1.0,
        sides: Sequence[int] | None = None,
        strict: bool = False,
    ) -> None:
        self.mode = mode
        self.channels = 1 if mode == "L" else 3
        self.size = size
        self.crop_fraction = crop_fraction
        # The shorter side of each image as stored, when the headers were read (else None).
        self.sides = list(sides) if sides is not None else None
        self.strict = strict
        self._reported: set[int] = set()

    # -------------------------------------------------------------- what subclasses define
    def __len__(self) -> int:
        raise NotImplementedError

    def source(self, index: int) -> Source:
        """Image ``index`` as a path or as its bytes."""
        raise NotImplementedError

    def name(self, index: int) -> str:
        """How image ``index`` is named in messages (its path, or shard and member)."""
        raise NotImplementedError

    # -------------------------------------------------------------- geometry
    @property
    def image_size(self) -> tuple[int, int] | None:
        """(size, size) with a fixed geometry; None at full resolution (sizes vary)."""
        return None if self.size is None else (self.size, self.size)

    def at_size(self, size: int, crop_fraction: float = 1.0) -> StreamedImages:
        """The same images shown whole at ``size`` (the centre ``crop_fraction`` of the shorter
        side)."""
        other = copy.copy(self)
        other.size, other.crop_fraction, other._reported = size, crop_fraction, set()
        return other

    def subset(self, indices: Sequence[int]) -> StreamedImages:
        """The images at ``indices``, in that order, with this geometry."""
        other = copy.copy(self)
        for attribute in (*self._per_image, "sides"):
            values = getattr(self, attribute)
            if values is not None:
                setattr(other, attribute, [values[i] for i in indices])
        other._reported = set()
        return other

    def typical_side(self) -> int | None:
        """The median shorter side of the stored images, when known."""
        return int(np.median(self.sides)) if self.sides else None

    # -------------------------------------------------------------- reading
    def __getitem__(self, index: int) -> torch.Tensor:
        if self.size is None:
            raise DataError(
                "a full-resolution stream has no fixed image size: show it whole with "
                "at_size(size), or cut training views with crops()"
            )
        size, mode, fraction = self.size, self.mode, self.crop_fraction
        return self._decode(index, lambda source: decode_whole(source, size, mode, fraction))

    def read_many(self, indices: Sequence[int]) -> torch.Tensor:
        """The images at ``indices`` as a uint8 ``(B, C, H, W)`` tensor."""
        if not indices:
            size = self.size or 0
            return torch.empty(0, self.channels, size, size, dtype=torch.uint8)
        return torch.stack(thread_map(self.__getitem__, list(indices)))

    def crops(self, epoch: int, index: int, sampler: Any, size: int) -> torch.Tensor:
        """Image ``index``'s training views in ``epoch`` as a uint8 ``(V, C, size, size)``
        tensor: ``sampler.draw(epoch, index, height, width)`` gives each view's box and flip."""

        def cut(source: Source) -> np.ndarray:
            return decode_crops(source, size, self.mode,
                                lambda h, w: sampler.draw(epoch, index, h, w),
                                whole_pixels=True)  # fmt: skip

        return self._decode(index, cut)

    def _decode(self, index: int, decode: Callable[[Source], np.ndarray]) -> torch.Tensor:
        """``decode`` image ``index``, or the next readable one after reporting it."""
        first_error: Exception | None = None
        for offset in range(_REPLACEMENT_TRIES):
            current = (index + offset) % len(self)
            try:
                return torch.from_numpy(decode(self.source(current)))
            except Exception as error:  # PIL raises many error types on malformed files
                self._report(current, error)
                first_error = first_error or error
        raise DataError(
            f"cannot decode image {self.name(index)} nor the {_REPLACEMENT_TRIES - 1} after it "
            f"(first error: {first_error}); is the data readable?"
        ) from first_error

    def _report(self, index: int, error: Exception) -> None:
        reason = str(error) or type(error).__name__
        if self.strict:
            raise DataError(f"unreadable image file {self.name(index)}: {reason}") from error
        if index not in self._reported:
            self._reported.add(index)
            warnings.warn(
                f"cannot decode image {self.name(index)} ({reason}); the next readable image "
                "is used in its place (--strict fails instead)",
                stacklevel=3,
            )
