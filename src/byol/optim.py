"""LARS and the parameter groups BYOL trains with.

LARS as in the reference page (and the official code): per parameter,
    g ← g + wd·w;  g ← g·η‖w‖/‖g‖ (1 where either norm is 0);  μ ← m·μ + g;  w ← w − lr·μ.
Biases and normalisation parameters skip both the weight decay and the trust ratio; they
still get momentum and the plain learning rate. Every step is a handful of fused
``torch._foreach_*`` calls per group, with no Python loop over tensors and no host sync.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

__all__ = ["LARS", "is_excluded_from_lars", "param_groups"]

_NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)


class LARS(Optimizer):
    """Layer-wise Adaptive Rate Scaling (You et al. 2017) in BYOL's form.

    Args:
        params: parameters or parameter groups. A group may set ``weight_decay`` and
            ``lars`` (``False`` turns off the trust ratio, as for biases and BatchNorm).
        lr: learning rate.
        momentum: heavy-ball momentum (no Nesterov, no dampening).
        weight_decay: decoupled-from-nothing L2 term added to the gradient before adaptation.
        trust_coefficient: η of the trust ratio η‖w‖/‖g‖.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 1e-3,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"learning rate must be >= 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if trust_coefficient <= 0.0:
            raise ValueError(f"trust_coefficient must be > 0, got {trust_coefficient}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "trust_coefficient": trust_coefficient,
            "lars": True,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            buffers = []
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(
                        p, memory_format=torch.preserve_format
                    )
                buffers.append(state["momentum_buffer"])

            if group["weight_decay"] != 0.0:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            if group["lars"]:
                weight_norms = torch.stack(torch._foreach_norm(params))
                grad_norms = torch.stack(torch._foreach_norm(grads))
                ratio = torch.where(
                    (weight_norms > 0) & (grad_norms > 0),
                    group["trust_coefficient"] * weight_norms / grad_norms,
                    torch.ones_like(weight_norms),
                )
                grads = torch._foreach_mul(grads, list(ratio.unbind()))
            torch._foreach_mul_(buffers, group["momentum"])
            torch._foreach_add_(buffers, grads)
            torch._foreach_add_(params, buffers, alpha=-group["lr"])
        return loss


def is_excluded_from_lars(name: str, parameter: torch.Tensor, module: nn.Module) -> bool:
    """Biases, normalisation parameters and any other ≤1-d parameter skip decay and trust ratio,
    and so do the parameters a module lists in ``no_weight_decay()`` (timm's convention: a
    ViT's position embedding and class / distillation / register tokens)."""
    if isinstance(module, _NORM_TYPES) or name.endswith("bias") or parameter.ndim <= 1:
        return True
    listed = getattr(module, "no_weight_decay", None)
    return callable(listed) and name in set(listed())


def param_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    parameters: Iterable[torch.Tensor] | None = None,
    predictor_lr_scale: float = 1.0,
) -> list[dict[str, Any]]:
    """Regular weights (weight decay + trust ratio) and exclusions (neither): two groups, or
    four with a ``predictor_lr_scale`` other than 1.

    ``model`` may be a :class:`byol.BYOL`, whose ``online_parameters()`` are then used (the
    target is never handed to an optimizer); for any other module, its trainable parameters.
    ``parameters`` restricts the groups to that subset.

    Every group carries ``lr_scale``, the multiple of the scheduled learning rate it trains
    at (the trainer sets ``group["lr"] = lr * group["lr_scale"]``). With ``predictor_lr_scale``
    other than 1 the ``model.predictor``'s parameters get two groups of their own at that
    scale, after the others', so ``param_groups[0]`` still holds the scheduled rate.

    Example::

        groups = param_groups(byol_model, 1.5e-6, predictor_lr_scale=10.0)
        optimizer = LARS(groups, lr=0.0)
    """
    if parameters is None:
        online = getattr(model, "online_parameters", None)
        parameters = online() if callable(online) else model.parameters()
    wanted = {id(p) for p in parameters if p.requires_grad}
    predictor = getattr(model, "predictor", None)
    faster: set[int] = set()
    if predictor_lr_scale != 1.0 and isinstance(predictor, nn.Module):
        faster = {id(p) for p in predictor.parameters()}
    # (lars, scaled) -> parameters, in the order the groups are listed.
    buckets: dict[tuple[bool, bool], list[torch.Tensor]] = {
        (True, False): [], (False, False): [], (True, True): [], (False, True): [],
    }  # fmt: skip
    seen: set[int] = set()
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if id(parameter) not in wanted or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            lars = not is_excluded_from_lars(name, parameter, module)
            buckets[(lars, id(parameter) in faster)].append(parameter)
    return [
        {"params": params, "weight_decay": weight_decay if lars else 0.0, "lars": lars,
         "lr_scale": predictor_lr_scale if scaled else 1.0}
        for (lars, scaled), params in buckets.items() if params
    ]  # fmt: skip
