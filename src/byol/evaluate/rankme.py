"""RankMe: a label-free score of a representation (Garrido et al., "RankMe: Assessing the
Downstream Performance of Pretrained Self-Supervised Representations by Their Rank", ICML 2023).

For embeddings Z (N × D) with singular values σ_1..σ_min(N,D), p_k = σ_k / ‖σ‖₁ + ε and

    RankMe(Z) = exp(−Σ_k p_k log p_k),

the exponential of the entropy of the normalised spectrum: a smooth effective rank between 1
(every embedding on one line: collapse) and min(N, D). It needs no labels and is unchanged when
the features are scaled. The paper computes it on about 25,600 samples and found that, across
hyper-parameters of one method, a higher RankMe predicts better linear accuracy.
"""

from __future__ import annotations

import torch

from ..errors import DataError

__all__ = ["RANKME_EPS", "RANKME_SAMPLES", "rankme"]

#: The ε of the paper's definition.
RANKME_EPS = 1e-7
#: The paper's number of samples.
RANKME_SAMPLES = 25_600


@torch.no_grad()
def rankme(features: torch.Tensor, eps: float = RANKME_EPS) -> float:
    """RankMe of ``features`` (N, D): exp of the entropy of its normalised singular values.

    Example::

        >>> rankme(torch.eye(4))              # four equal singular values
        4.0...
        >>> rankme(torch.ones(10, 3))         # rank one: collapsed
        1.0...
    """
    if not isinstance(features, torch.Tensor) or features.dim() != 2 or features.shape[0] < 2:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features)
        raise DataError(f"rankme needs (N >= 2, D) features, got {shape}")
    singular = torch.linalg.svdvals(features.detach().double().cpu())
    total = singular.sum()
    if not bool(torch.isfinite(total)) or float(total) == 0.0:
        return 1.0 if bool(torch.isfinite(total)) else float("nan")
    p = singular / total + eps
    return float(torch.exp(-(p * p.log()).sum()))
