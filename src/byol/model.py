"""The BYOL module: online and target networks, the regression loss and the target update.

Follows the paper (Grill et al. 2020, section 3.1; docs/method.md): the online network is
encoder → projector → predictor (weights θ), the target network is encoder → projector
(weights ξ, an exponential moving average of θ). The loss is the symmetrised normalised-MSE
between the online prediction of one view and the target projection of the other view, summed
over the two directions and averaged over the batch.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BYOL",
    "COLLAPSE_WARNING",
    "MLPHead",
    "collapse_std",
    "infer_feature_dim",
    "regression_loss",
]

#: :func:`collapse_std` below this warns that the representations are collapsing (healthy ~1).
COLLAPSE_WARNING = 0.05


class MLPHead(nn.Sequential):
    """Projector / predictor of the paper: Linear(bias) → BatchNorm1d → ReLU → Linear(no bias).

    The output is deliberately not batch-normalised. BatchNorm uses PyTorch's momentum 0.1
    (the paper's decay 0.9) and eps 1e-5.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 256) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden_dim, bias=True),
            nn.BatchNorm1d(hidden_dim, eps=1e-5, momentum=0.1),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim, bias=False),
        )
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim


def regression_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample BYOL loss ‖p̄ − z̄‖² = 2 − 2·cos(p, z), computed in float32.

    A zero vector has no direction; it is normalised to zero (eps guard), which gives the
    finite value 2 and a finite gradient instead of NaN.
    """
    prediction = F.normalize(prediction.float(), dim=-1, eps=1e-12)
    target = F.normalize(target.float(), dim=-1, eps=1e-12)
    return 2.0 - 2.0 * (prediction * target).sum(dim=-1)


def collapse_std(projection: torch.Tensor) -> torch.Tensor:
    """Collapse monitor: mean per-dimension std of the L2-normalised projections, times √d.

    About 1 for well spread representations, 0 when every sample maps to the same direction.
    Returns a 0-d tensor (no host sync).
    """
    normalised = F.normalize(projection.detach().float(), dim=-1)
    return normalised.std(dim=0).mean() * normalised.shape[-1] ** 0.5


def _first_input_channels(module: nn.Module) -> int:
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            return layer.in_channels
    return 3


@torch.no_grad()
def infer_feature_dim(encoder: nn.Module, input_shape: Sequence[int] | None = None) -> int:
    """Dimension of the encoder's (flattened) output, found with one dry run in eval mode.

    ``input_shape`` is (C, H, W); by default the first convolution's input channels at 64×64.
    Eval mode keeps the dry run from touching BatchNorm running statistics.
    """
    if input_shape is None:
        input_shape = (_first_input_channels(encoder), 64, 64)
    parameter = next(encoder.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else None
    was_training = encoder.training
    encoder.eval()
    try:
        output = encoder(torch.zeros(2, *input_shape, device=device, dtype=dtype))
    finally:
        encoder.train(was_training)
    return int(output.flatten(1).shape[1])


class BYOL(nn.Module):
    """Online network (encoder, projector, predictor) and target network (encoder, projector).

    Args:
        encoder: any ``nn.Module`` mapping images to a representation y (flattened if needed).
        feature_dim: size of y; inferred with a dry run when ``None``.
        hidden_dim: hidden width of projector and predictor (paper: 4096).
        projection_dim: output width of projector and predictor (paper: 256).
        predictor_hidden_dim: hidden width of the predictor, ``hidden_dim`` when ``None``.
        concat_views: run both views through each network in one batch. Faster, but BatchNorm
            then normalises over the two views together, which is *not* the paper's method;
            off by default.
        input_shape: (C, H, W) used for the dry run that infers ``feature_dim``.

    ``model(view1, view2)`` returns the scalar loss mean_b[L(v1→v2') + L(v2→v1')]; the
    target is computed without gradient (stop-gradient) and only ``online_parameters()`` are
    meant for the optimizer. Call ``update_target(tau)`` after each optimizer step.
    """

    def __init__(
        self,
        encoder: nn.Module,
        *,
        feature_dim: int | None = None,
        hidden_dim: int = 4096,
        projection_dim: int = 256,
        predictor_hidden_dim: int | None = None,
        concat_views: bool = False,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if feature_dim is None:
            feature_dim = infer_feature_dim(encoder, input_shape)
        self.feature_dim = feature_dim
        self.concat_views = concat_views
        self.online_encoder = encoder
        self.online_projector = MLPHead(feature_dim, hidden_dim, projection_dim)
        self.predictor = MLPHead(projection_dim, predictor_hidden_dim or hidden_dim, projection_dim)
        # ξ starts as a copy of θ (the paper's pseudo-code); it is never given to an optimizer.
        self.target_encoder = copy.deepcopy(encoder)
        self.target_projector = copy.deepcopy(self.online_projector)
        for parameter in self.target_parameters():
            parameter.requires_grad_(False)

    # -- parameter views ----------------------------------------------------------------
    def online_modules(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        return self.online_encoder, self.online_projector, self.predictor

    def online_parameters(self) -> Iterator[nn.Parameter]:
        """θ: the parameters the optimizer updates."""
        for module in self.online_modules():
            yield from module.parameters()

    def target_parameters(self) -> Iterator[nn.Parameter]:
        """ξ: the moving-average parameters (no gradient)."""
        yield from self.target_encoder.parameters()
        yield from self.target_projector.parameters()

    # -- forward ------------------------------------------------------------------------
    def online(self, view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Online projection z and prediction q(z) of a batch of views (with gradient)."""
        projection = self.online_projector(self.online_encoder(view).flatten(1))
        return projection, self.predictor(projection)

    @torch.no_grad()
    def target(self, view: torch.Tensor) -> torch.Tensor:
        """Target projection z' of a batch of views: no gradient (the stop-gradient)."""
        return self.target_projector(self.target_encoder(view).flatten(1))

    def forward(
        self, view1: torch.Tensor, view2: torch.Tensor, *, return_stats: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Symmetrised BYOL loss. With ``return_stats`` also a dict of detached 0-d tensors."""
        if self.concat_views:
            batch = view1.shape[0]
            projection, prediction = self.online(torch.cat([view1, view2]))
            target = self.target(torch.cat([view1, view2]))
            projection1 = projection[:batch]
            prediction1, prediction2 = prediction[:batch], prediction[batch:]
            target1, target2 = target[:batch], target[batch:]
        else:
            # Each view is its own forward pass, so BatchNorm statistics are per view.
            projection1, prediction1 = self.online(view1)
            _, prediction2 = self.online(view2)
            target1 = self.target(view1)
            target2 = self.target(view2)
        loss = (
            regression_loss(prediction1, target2) + regression_loss(prediction2, target1)
        ).mean()
        if not return_stats:
            return loss
        return loss, {"collapse_std": collapse_std(projection1)}

    # -- target update ------------------------------------------------------------------
    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """ξ ← τ·ξ + (1 − τ)·θ for every parameter, with fused foreach operations.

        BatchNorm running statistics are buffers, not parameters: the target keeps its own,
        updated by its own training-mode forward passes.
        """
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"target decay tau must lie in [0, 1], got {tau}")
        target = list(self.target_parameters())
        online = [*self.online_encoder.parameters(), *self.online_projector.parameters()]
        # lerp(ξ, θ, 1 − τ) = ξ + (1 − τ)(θ − ξ); exact copy at τ = 0, untouched at τ = 1.
        torch._foreach_lerp_(target, online, 1.0 - tau)

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Representation y of the online encoder, in eval mode (running BatchNorm statistics)."""
        was_training = self.online_encoder.training
        self.online_encoder.eval()
        try:
            return self.online_encoder(images).flatten(1)
        finally:
            self.online_encoder.train(was_training)
