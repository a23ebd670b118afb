"""The data order of a run: which images each optimizer step trains on.

The order of epoch e is a permutation seeded by (seed, e) and the position within it follows
from the step, so a run resumed at any step reads exactly the batches it would have read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

__all__ = ["epoch_order", "index_batches"]


def epoch_order(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    """The data order of one epoch: a permutation that depends only on (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_items, generator=generator)


def index_batches(
    start: int,
    end: int,
    *,
    num_items: int,
    batch_size: int,
    steps_per_epoch: int,
    seed: int,
    shard: Callable[[torch.Tensor], torch.Tensor] = lambda indices: indices,
    with_epoch: bool = False,
) -> Iterator[Any]:
    """Index batches for optimizer steps ``start .. end - 1``; ``shard`` picks this process's
    share of each global batch. With ``with_epoch``, ``(epoch, indices)`` pairs (the loader's
    crops of full-resolution files depend on the epoch)."""
    order = None
    for step in range(start, end):
        epoch, position = divmod(step, steps_per_epoch)
        if order is None or position == 0:
            order = epoch_order(num_items, seed, epoch)
        indices = shard(order[position * batch_size : (position + 1) * batch_size])
        yield (epoch, indices) if with_epoch else indices
