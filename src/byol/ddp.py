"""Data-parallel training under ``torchrun``: process group, DDP, synchronised BatchNorm.

:class:`Distributed` is the context :class:`byol.train.Trainer` gets from
:func:`byol.distributed.current` when ``WORLD_SIZE > 1``. It

* joins the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR``/``MASTER_PORT``): ``nccl`` with device ``cuda:LOCAL_RANK`` when CUDA is
  used, ``gloo`` on CPU, and a timeout (``BYOL_DIST_TIMEOUT`` minutes, default 30) so that a
  rank that stops answering fails the job instead of hanging it;
* gives each rank its slice of every global batch (``--batch-size`` is the global batch);
* synchronises every BatchNorm of the BYOL model (online and target; each view is still its
  own forward pass, so statistics are per view over the global batch) and wraps the model in
  DistributedDataParallel, which averages the online gradients. The target parameters have
  no gradient, so DDP leaves them alone; they start equal on every rank (broadcast from rank
  0) and the moving-average update is deterministic, so they stay equal.

Since every rank has an equal shard and the loss is a per-rank batch mean, the averaged
gradient is the gradient of the global-batch loss: N processes compute what one process
would on the whole batch.

:func:`launch_local` is ``byol train --nproc N``: it runs torchrun in this process.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import inspect
import math
import os
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .errors import ConfigError
from .runtime import resolve_device
from .syncbn import convert_sync_batchnorm

__all__ = ["DEFAULT_TIMEOUT_MINUTES", "Distributed", "launch_local", "without_nproc"]

DEFAULT_TIMEOUT_MINUTES = 30.0
TIMEOUT_VARIABLE = "BYOL_DIST_TIMEOUT"


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    if value is None:
        raise ConfigError(
            f"environment variable {name} is not set; launch distributed training with "
            "torchrun (or `byol train --nproc N`), which sets RANK, WORLD_SIZE and LOCAL_RANK"
        )
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def _timeout() -> timedelta:
    raw = os.environ.get(TIMEOUT_VARIABLE)
    if raw is None or raw.strip() == "":
        return timedelta(minutes=DEFAULT_TIMEOUT_MINUTES)
    try:
        minutes = float(raw)
    except ValueError:
        minutes = math.nan
    if not math.isfinite(minutes) or minutes <= 0:
        raise ConfigError(
            f"{TIMEOUT_VARIABLE}={raw!r}: expected a positive number of minutes "
            f"(default {DEFAULT_TIMEOUT_MINUTES:g})"
        )
    return timedelta(minutes=minutes)


def _no_buffer_broadcast() -> dict[str, bool]:
    """DDP option to skip the per-forward buffer broadcast (its name changed in torch 2.14).

    Synchronised BatchNorm already keeps every running statistic equal on all ranks.
    """
    parameters = inspect.signature(DistributedDataParallel.__init__).parameters
    if "forward_sync_buffers" in parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


class _BYOLStep(nn.Module):
    """The BYOL model seen as one module, so DDP wraps the whole loss computation.

    DDP registers only parameters that require gradients (the online network); the target
    network rides along without gradient and is updated by ``BYOL.update_target``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)


_destroy_registered = False


def _destroy_process_group() -> None:
    # At interpreter exit. A DDP wrapper left in a reference cycle still holds the group and
    # its backend's worker threads; collecting it first frees them while the interpreter is
    # whole, rather than during finalisation, where a gloo rank can abort.
    gc.collect()
    with contextlib.suppress(Exception):
        if dist.is_initialized():
            dist.destroy_process_group()


class Distributed:
    """One rank of a ``torchrun`` job; the methods are collectives every rank must call.

    Build it with :meth:`from_environment`. Attributes: ``enabled`` (True), ``rank``,
    ``world_size``, ``local_rank``, ``device``, ``backend``.
    """

    enabled = True

    def __init__(
        self, rank: int, world_size: int, local_rank: int, device: torch.device, backend: str
    ) -> None:
        self.rank = rank
        self.world_size = world_size
        self.local_rank = local_rank
        self.device = device
        self.backend = backend

    @classmethod
    def from_environment(cls, device: str = "auto") -> Distributed:
        """Join (or reuse) the process group described by torchrun's environment variables.

        ``device`` is the ``--device`` setting: ``auto`` uses CUDA when available. CUDA means
        backend ``nccl`` and device ``cuda:LOCAL_RANK``; CPU means ``gloo``.
        """
        rank = _env_int("RANK")
        world_size = _env_int("WORLD_SIZE")
        local_rank = _env_int("LOCAL_RANK")
        if not 0 <= rank < world_size:
            raise ConfigError(f"RANK={rank} is outside 0..WORLD_SIZE-1 (WORLD_SIZE={world_size})")
        chosen = resolve_device(device, local_rank=local_rank)
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        if dist.is_initialized():
            if dist.get_world_size() != world_size or dist.get_rank() != rank:
                raise ConfigError(
                    f"a process group of size {dist.get_world_size()} (rank {dist.get_rank()}) "
                    f"already exists, but the environment says rank {rank} of {world_size}"
                )
            backend = dist.get_backend()
        else:
            if chosen.type == "cuda":
                torch.cuda.set_device(chosen)
            for name in ("MASTER_ADDR", "MASTER_PORT"):
                if name not in os.environ:
                    raise ConfigError(
                        f"environment variable {name} is not set; launch with torchrun"
                    )
            dist.init_process_group(
                backend=backend, init_method="env://", rank=rank, world_size=world_size,
                timeout=_timeout(),
            )  # fmt: skip
            global _destroy_registered
            if not _destroy_registered:
                atexit.register(_destroy_process_group)
                _destroy_registered = True
        return cls(rank, world_size, local_rank, chosen, backend)

    # ------------------------------------------------------------------ data
    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch of indices."""
        size = len(indices)
        if size % self.world_size:
            raise ConfigError(
                f"--batch-size {size} is not divisible by the {self.world_size} processes "
                f"(WORLD_SIZE); --batch-size is the global batch, use a multiple of "
                f"{self.world_size}"
            )
        share = size // self.world_size
        return indices[self.rank * share : (self.rank + 1) * share]

    # ------------------------------------------------------------------ collectives
    def barrier(self) -> None:
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def _on_device(self, value: torch.Tensor) -> torch.Tensor:
        return value.detach().to(self.device, copy=True)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The average of ``value`` over ranks (a new tensor)."""
        total = self._on_device(value)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total / self.world_size

    def max(self, value: torch.Tensor) -> torch.Tensor:
        """The element-wise maximum of ``value`` over ranks (a new tensor)."""
        result = self._on_device(value)
        dist.all_reduce(result, op=dist.ReduceOp.MAX)
        return result

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on at least one."""
        value = torch.tensor([int(bool(flag))], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def gather_generator_states(self, state: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's augmentation generator state, indexed by rank (CPU uint8 tensors)."""
        local = self._on_device(state)
        gathered = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(gathered, local)
        return [item.cpu() for item in gathered]

    # ------------------------------------------------------------------ model
    def wrap(self, model: nn.Module) -> nn.Module:
        """Synchronise ``model``'s BatchNorm layers in place and return it wrapped in DDP.

        Keep using ``model`` itself for the optimizer, ``update_target`` and checkpoints;
        call the returned module for the training forward pass.
        """
        converted = convert_sync_batchnorm(model)
        if converted is not model:
            raise ConfigError("the model itself is a BatchNorm layer; wrap a larger module")
        # Every rank starts from rank 0's online and target weights and statistics.
        with torch.no_grad():
            for tensor in (*model.parameters(), *model.buffers()):
                dist.broadcast(tensor.data, src=0)
        return DistributedDataParallel(
            _BYOLStep(model),
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            **_no_buffer_broadcast(),
        )

    def no_sync(self, module: nn.Module):
        """Skip the gradient all-reduce (for all but the last accumulation micro-batch)."""
        inner = getattr(module, "_orig_mod", module)  # through torch.compile
        if isinstance(inner, DistributedDataParallel):
            return inner.no_sync()
        return contextlib.nullcontext()


# ---------------------------------------------------------------------- launching
def without_nproc(argv: Sequence[str]) -> list[str]:
    kept: list[str] = []
    skip_value = False
    for argument in argv:
        if skip_value:
            skip_value = False
            continue
        if argument == "--nproc":
            skip_value = True
            continue
        if argument.startswith("--nproc="):
            continue
        kept.append(argument)
    return kept


def launch_local(nproc: int, argv: Sequence[str]) -> int:
    """Run ``byol`` with ``argv`` (minus ``--nproc``) in ``nproc`` processes on this machine.

    Equivalent to ``torchrun --standalone --nproc_per_node=NPROC -m byol ARGV``; torchrun runs
    in this process as the agent that starts, watches and, if one fails, stops the workers.
    Returns 0 when every process succeeded, else the failed process's exit code (1 when it
    died from a signal).
    """
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {nproc}")
    arguments = torchrun.parse_args(
        ["--standalone", f"--nproc-per-node={nproc}", "-m", "byol", *without_nproc(argv)]
    )
    try:
        torchrun.run(arguments)
    except ChildFailedError as error:
        rank, failure = error.get_first_failure()
        code = failure.exitcode
        cause = f"exit code {code}" if code > 0 else f"signal {failure.signal_name()}"
        print(
            f"byol train: error: process {rank} of {nproc} failed ({cause}); the others were "
            "stopped. Its error message is printed above.",
            file=sys.stderr,
        )
        return code if code > 0 else 1
    except SignalException as error:
        print(f"byol train: stopped by signal {error.sigval.name}", file=sys.stderr)
        return 128 + int(error.sigval)
    return 0
