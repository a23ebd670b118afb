"""Ablation baselines for ``byol bench``: the fused (``torch._foreach_*``) target update and
LARS step as per-parameter Python loops computing the same thing, as most implementations
write them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..optim import LARS

__all__ = ["loop_lars", "loop_update_target"]


def loop_update_target(model: torch.nn.Module) -> Callable[[float], None]:
    """The target EMA as a per-parameter Python loop (the usual implementation)."""
    online = [*model.online_encoder.parameters(), *model.online_projector.parameters()]
    target = list(model.target_parameters())

    @torch.no_grad()
    def update_target(tau: float) -> None:
        for target_parameter, online_parameter in zip(target, online):
            target_parameter.mul_(tau).add_(online_parameter, alpha=1.0 - tau)

    return update_target


def loop_lars(params: Any, **options: Any) -> torch.optim.Optimizer:
    class LoopLARS(LARS):
        """:class:`byol.optim.LARS`'s update, one parameter at a time (no foreach)."""

        @torch.no_grad()
        def step(self, closure=None):  # type: ignore[override]
            for group in self.param_groups:
                for parameter in group["params"]:
                    if parameter.grad is None:
                        continue
                    grad = parameter.grad
                    if group["weight_decay"] != 0.0:
                        grad = grad.add(parameter, alpha=group["weight_decay"])
                    if group["lars"]:
                        weight_norm = torch.linalg.vector_norm(parameter)
                        grad_norm = torch.linalg.vector_norm(grad)
                        ratio = torch.where(
                            (weight_norm > 0) & (grad_norm > 0),
                            group["trust_coefficient"] * weight_norm / grad_norm,
                            torch.ones_like(weight_norm),
                        )
                        grad = grad * ratio
                    state = self.state[parameter]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(parameter)
                    buffer = state["momentum_buffer"]
                    buffer.mul_(group["momentum"]).add_(grad)
                    parameter.add_(buffer, alpha=-group["lr"])

    return LoopLARS(params, **options)
