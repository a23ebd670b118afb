"""Process-group context for the training loop.

A single process gets :class:`Single`, whose collectives do nothing. Under ``torchrun`` the
training loop gets a context that shards the data, averages metrics and wraps the online
network in DistributedDataParallel (see :func:`current`).
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from .ddp import Distributed

__all__ = ["Single", "current"]


class Single:
    """The one-process case: rank 0 of 1, every collective is the identity."""

    enabled = False
    rank = 0
    world_size = 1
    device: torch.device | None = None

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        return indices

    def barrier(self) -> None:
        pass

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        return value

    def max(self, value: torch.Tensor) -> torch.Tensor:
        return value

    def any(self, flag: bool) -> bool:
        return flag

    def gather_generator_states(self, state: torch.Tensor) -> list[torch.Tensor]:
        return [state]

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def no_sync(self, module: nn.Module):
        return contextlib.nullcontext()


def current(device: str = "auto") -> Single | Distributed:
    """The context of this process: distributed when launched by torchrun (WORLD_SIZE > 1).

    ``device`` is the ``--device`` setting; under torchrun it picks CUDA (nccl) or CPU (gloo).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from .ddp import Distributed

        return Distributed.from_environment(device)
    return Single()
