"""Synchronised BatchNorm: batch statistics over the global batch of all processes.

The paper computes BatchNorm statistics across the whole global batch (4,096 images over
512 cores). On CUDA we use :class:`torch.nn.SyncBatchNorm`; it refuses CPU tensors, so for
CPU training (``gloo``) :class:`CPUSyncBatchNorm` does the same job with plain collectives:

* forward: every process contributes (count, mean, sum of squared deviations) per channel;
  they are gathered and combined with Chan's parallel formula (numerically stable, and
  correct for shards of different sizes), giving the global mean and biased variance used
  for normalisation; the running variance gets the unbiased global variance, as in torch;
* backward: the exact gradient of a BatchNorm over the concatenated shards needs the global
  sums of ``dy`` and ``dy * x_hat``; they are all-reduced. The weight and bias gradients are
  this process's share (DistributedDataParallel averages them like any other gradient).

:func:`convert_sync_batchnorm` swaps every BatchNorm of a module for the right one by device.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["CPUSyncBatchNorm", "convert_sync_batchnorm"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _reduce_dims(input: torch.Tensor) -> list[int]:
    """Every dimension but the channels (dim 1): (N,) for (N, C), (N, H, W) for (N, C, H, W)."""
    return [0, *range(2, input.dim())]


def _channel_view(value: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
    return value.view(1, -1, *([1] * (input.dim() - 2)))


class _SyncBatchNormFunction(torch.autograd.Function):
    """Training-mode BatchNorm whose statistics and input gradient span all processes."""

    @staticmethod
    def forward(
        ctx,
        input: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        running_mean: torch.Tensor | None,
        running_var: torch.Tensor | None,
        eps: float,
        momentum: float,
        group: dist.ProcessGroup | None,
    ) -> torch.Tensor:
        dims = _reduce_dims(input)
        # Low-precision inputs are normalised in float32; the statistics are combined in
        # float64 (they are only 2C+1 numbers per process).
        x = input.float() if input.dtype in _LOW_PRECISION else input
        channels = x.shape[1]
        local_count = x.numel() // channels if channels else 0
        if local_count > 0:
            local_mean = x.mean(dim=dims)
            local_m2 = (x - _channel_view(local_mean, x)).square().sum(dim=dims)
        else:  # an empty shard contributes nothing but must still join the collective
            local_mean = x.new_zeros(channels)
            local_m2 = x.new_zeros(channels)
        packed = torch.cat([
            torch.tensor([float(local_count)], dtype=torch.float64, device=x.device),
            local_mean.double(), local_m2.double(),
        ])  # fmt: skip
        world = dist.get_world_size(group)
        gathered = [torch.empty_like(packed) for _ in range(world)]
        dist.all_gather(gathered, packed, group=group)
        stats = torch.stack(gathered)
        counts = stats[:, :1]
        means = stats[:, 1 : 1 + channels]
        m2s = stats[:, 1 + channels :]
        total = float(counts.sum())
        if total <= 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size "
                f"{list(input.shape)} on this process and {int(total)} values in total"
            )
        mean = (counts * means).sum(0) / total
        m2 = m2s.sum(0) + (counts * (means - mean).square()).sum(0)
        var = m2 / total
        invstd = torch.rsqrt(var + eps)

        if running_mean is not None and running_var is not None:
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
                unbiased = (m2 / (total - 1)).to(running_var.dtype)
                running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)

        mean = mean.to(x.dtype)
        invstd = invstd.to(x.dtype)
        x_hat = (x - _channel_view(mean, x)) * _channel_view(invstd, x)
        output = x_hat
        if weight is not None:
            output = output * _channel_view(weight.to(x.dtype), x)
        if bias is not None:
            output = output + _channel_view(bias.to(x.dtype), x)
        ctx.save_for_backward(x_hat, invstd, weight)
        ctx.total = total
        ctx.group = group
        ctx.has_bias = bias is not None
        ctx.input_dtype = input.dtype
        return output.to(input.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        x_hat, invstd, weight = ctx.saved_tensors
        dims = _reduce_dims(x_hat)
        grad = grad_output.to(x_hat.dtype)
        sum_dy = grad.sum(dim=dims)
        sum_dy_xhat = (grad * x_hat).sum(dim=dims)

        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            # Every process reaches this point (identical graphs), so the collective matches.
            sums = torch.cat([sum_dy, sum_dy_xhat])
            dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=ctx.group)
            global_dy, global_dy_xhat = sums.chunk(2)
            scale = invstd if weight is None else invstd * weight.to(x_hat.dtype)
            grad_input = (
                grad
                - _channel_view(global_dy / ctx.total, x_hat)
                - x_hat * _channel_view(global_dy_xhat / ctx.total, x_hat)
            ) * _channel_view(scale, x_hat)
            grad_input = grad_input.to(ctx.input_dtype)
        if weight is not None and ctx.needs_input_grad[1]:
            grad_weight = sum_dy_xhat.to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = sum_dy.to(weight.dtype if weight is not None else sum_dy.dtype)
        return grad_input, grad_weight, grad_bias, None, None, None, None, None


class CPUSyncBatchNorm(_BatchNorm):
    """BatchNorm over the batches of all processes, for any device and backend (used on CPU).

    Same parameters, buffers and state-dict keys as ``nn.BatchNorm1d/2d/3d``, so checkpoints
    are interchangeable. Outside training, or when no process group of more than one process
    is running, it is a plain BatchNorm.

    Args:
        num_features: channels C of (N, C) or (N, C, ...) inputs.
        eps, momentum, affine, track_running_stats: as in :class:`torch.nn.BatchNorm2d`.
        process_group: the processes to synchronise over (default: all).
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: dist.ProcessGroup | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype
        )
        self.process_group = process_group

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an input of at least 2 dimensions, got {input.dim()}D")

    def _synchronised(self) -> bool:
        uses_batch_stats = self.training or self.running_mean is None
        return (
            uses_batch_stats
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size(self.process_group) > 1
        )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self._synchronised():
            return super().forward(input)
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as in torch
                factor = 1.0 / float(self.num_batches_tracked)
        update = self.training and self.track_running_stats
        return _SyncBatchNormFunction.apply(
            input, self.weight, self.bias,
            self.running_mean if update else None, self.running_var if update else None,
            self.eps, factor, self.process_group,
        )  # fmt: skip


def _module_device(module: nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _convert_cpu(module: nn.Module, process_group: dist.ProcessGroup | None) -> nn.Module:
    converted = module
    if isinstance(module, _BatchNorm) and not isinstance(
        module, CPUSyncBatchNorm | nn.SyncBatchNorm
    ):
        converted = CPUSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine,
            module.track_running_stats, process_group,
        )  # fmt: skip
        # The very same Parameter and buffer objects: an optimizer built before the
        # conversion keeps updating them.
        if module.affine:
            converted.weight = module.weight
            converted.bias = module.bias
        converted.running_mean = module.running_mean
        converted.running_var = module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.training = module.training
    for name, child in module.named_children():
        converted.add_module(name, _convert_cpu(child, process_group))
    return converted


def convert_sync_batchnorm(
    module: nn.Module, process_group: dist.ProcessGroup | None = None
) -> nn.Module:
    """Replace every BatchNorm in ``module`` by a synchronised one; returns the module.

    CUDA modules get :class:`torch.nn.SyncBatchNorm`, others :class:`CPUSyncBatchNorm`. The
    parameters and buffers are reused, not copied. Children are replaced in place, so a
    module that is not itself a BatchNorm comes back as the same object.
    """
    if _module_device(module).type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
    return _convert_cpu(module, process_group)
