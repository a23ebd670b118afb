"""The two halves of the BYOL loss on two CPU threads at once.

The symmetrised loss is a sum of two independent halves: the online network predicting the
target's projection of view 2 from view 1, and the reverse. Each half needs one online
forward + backward and one target forward, and nothing of the other half until the gradients
are summed. On a CPU with few cores, running each half on its own thread (each with half the
intra-op threads) beats splitting every operator across all threads: small convolutions,
BatchNorm and element-wise kernels scale poorly across threads, whole halves scale almost
perfectly (``benchmarks/RESULTS.md``, train_step section, has the before/after).

The mathematics is unchanged: the gradient is the sum of the two halves' gradients, and
BatchNorm running statistics end exactly as the sequential forward passes would leave them.
Each half runs on a replica of the networks that shares the parameters but has its own
buffers (two threads updating the same running mean in place would race); afterwards the
replicas' statistics are merged in the sequential order (online: view 1 then view 2; target:
view 1 then view 2). For a BatchNorm with momentum m that starts at r, the first pass alone
gives r₁ = (1 − m)·r + m·μ₁ and the second alone r₂ = (1 − m)·r + m·μ₂; the sequential result
(1 − m)·r₁ + m·μ₂ equals r₂ + (1 − m)·(r₁ − r).

Used by :class:`byol.train.Trainer` on CPU in fp32 without DDP or ``torch.compile`` when
``parallel_views`` is on (the default) and at least two intra-op threads are available;
:func:`supports_parallel_views` says whether a model qualifies.
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

from .model import BYOL, collapse_std, regression_loss

__all__ = ["ViewParallelStep", "supports_parallel_views"]


def _batch_norms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def supports_parallel_views(model: BYOL) -> bool:
    """True when every buffer of ``model`` is a BatchNorm running statistic with a fixed
    momentum, the only kind of buffer whose merge rule is known (a cumulative average,
    ``momentum=None``, or any other stateful buffer keeps the sequential step), and the model
    normalises each view on its own (``concat_views=False``: the halves cannot share a batch)."""
    if model.concat_views:
        return False
    known: set[int] = set()
    for norm in _batch_norms(model):
        if norm.momentum is None:
            return False
        known.update(id(buffer) for buffer in norm.buffers(recurse=False))
    return all(id(buffer) in known for buffer in model.buffers())


def _replica(model: BYOL) -> BYOL:
    """A copy of ``model`` that shares its parameters and owns copies of its buffers."""
    return copy.deepcopy(model, memo={id(p): p for p in model.parameters()})


def _online_buffers(model: BYOL) -> list[torch.Tensor]:
    return [buffer for module in model.online_modules() for buffer in module.buffers()]


def _target_buffers(model: BYOL) -> list[torch.Tensor]:
    return [*model.target_encoder.buffers(), *model.target_projector.buffers()]


def _momenta(model: BYOL, buffers: list[torch.Tensor]) -> list[float]:
    """The BatchNorm momentum that updates each of ``buffers``."""
    owner = {id(b): norm for norm in _batch_norms(model) for b in norm.buffers(recurse=False)}
    return [float(owner[id(buffer)].momentum) for buffer in buffers]


class ViewParallelStep:
    """Forward and backward of the BYOL loss with its two halves on two threads.

    ``step(view1, view2, loss_scale)`` accumulates ∂(loss · loss_scale)/∂θ into the online
    parameters' ``.grad`` (as ``loss.backward()`` would), updates every BatchNorm running
    statistic as the sequential forward would, and returns the loss (the same value as
    ``model(view1, view2)``) and the stats dict of ``model(..., return_stats=True)``, as
    detached tensors. Each half runs with ``threads_per_half`` intra-op threads (default:
    half of ``torch.get_num_threads()``); the thread count is restored afterwards.
    The model must not be moved to another device or dtype after construction.
    """

    def __init__(self, model: BYOL, threads_per_half: int | None = None) -> None:
        if not supports_parallel_views(model):
            raise ValueError(
                "parallel views need concat_views=False and every model buffer to be a "
                "BatchNorm running statistic with a float momentum"
            )
        self.threads_per_half = threads_per_half
        self.parameters = [p for p in model.online_parameters() if p.requires_grad]
        # Replica 0 computes online(view 1) against target(view 2), replica 1 the reverse.
        self.replicas = (_replica(model), _replica(model))
        self._online = [_online_buffers(m) for m in (model, *self.replicas)]
        self._target = [_target_buffers(m) for m in (model, *self.replicas)]
        self._online_momenta = _momenta(model, self._online[0])
        self._target_momenta = _momenta(model, self._target[0])
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="byol-view")

    def _run_half(
        self, replica: BYOL, source: torch.Tensor, other: torch.Tensor, scale: float, threads: int
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor | None, ...]]:
        torch.set_num_threads(threads)
        target = replica._target(other)
        projection, prediction = replica._online(source)
        loss = regression_loss(prediction, target).mean()
        grads = torch.autograd.grad(loss * scale, self.parameters, allow_unused=True)
        return loss.detach(), projection.detach(), grads

    def step(
        self, view1: torch.Tensor, view2: torch.Tensor, loss_scale: float = 1.0
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        (online, *online_after), (target, *target_after) = self._online, self._target
        for buffers in online_after:
            torch._foreach_copy_(buffers, online)
        for buffers in target_after:
            torch._foreach_copy_(buffers, target)
        first, second = self.replicas
        total_threads = torch.get_num_threads()
        threads = self.threads_per_half or max(1, total_threads // 2)
        try:
            torch.set_num_threads(threads)
            other = self._pool.submit(self._run_half, first, view1, view2, loss_scale, threads)
            loss2, _, grads2 = self._run_half(second, view2, view1, loss_scale, threads)
            loss1, projection1, grads1 = other.result()
        finally:
            torch.set_num_threads(total_threads)
        with torch.no_grad():
            for parameter, g1, g2 in zip(self.parameters, grads1, grads2, strict=True):
                if g1 is None and g2 is None:
                    continue
                grad = g1 if g2 is None else (g2 if g1 is None else g1 + g2)
                if parameter.grad is None:
                    parameter.grad = grad
                else:
                    parameter.grad.add_(grad)
            # Online statistics: view 1 (first replica) then view 2 (second replica).
            self._merge(online, *online_after, self._online_momenta)
            # Target statistics: view 1 (second replica's target) then view 2 (first's).
            self._merge(target, target_after[1], target_after[0], self._target_momenta)
        return loss1 + loss2, {"collapse_std": collapse_std(projection1)}

    @staticmethod
    def _merge(
        buffers: list[torch.Tensor],
        after_first: list[torch.Tensor],
        after_second: list[torch.Tensor],
        momenta: list[float],
    ) -> None:
        for buffer, first, second, momentum in zip(
            buffers, after_first, after_second, momenta, strict=True
        ):
            if buffer.is_floating_point():
                # r₂ + (1 − m)(r₁ − r), the sequential result (module docstring).
                buffer.copy_(second + (1.0 - momentum) * (first - buffer))
            else:  # num_batches_tracked: one count per pass
                buffer.copy_(second + (first - buffer))

    def close(self) -> None:
        """Stop the worker thread."""
        self._pool.shutdown(wait=True)
