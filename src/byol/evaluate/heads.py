"""Many linear softmax classifiers trained at once on the same minibatches."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["MOMENTUM", "StackedSoftmaxHeads", "cosine_factor"]

MOMENTUM = 0.9
# Features are scored in chunks of this many rows so that (rows, L*C) logits stay small.
SCORE_CHUNK = 8192


class StackedSoftmaxHeads:
    """``H`` independent linear softmax classifiers, each with its own learning rate, trained on
    the same minibatches.

    The weights of all heads form one (D, H*C) matrix, so a minibatch step is two GEMMs for the
    whole set (reading the (B, D) batch dominates the cost, so 10 heads cost little more than
    one). Gradients are computed in closed form (softmax cross-entropy: dlogits = p - onehot),
    avoiding autograd bookkeeping; the update is PyTorch's SGD with Nesterov momentum and no
    dampening: ``buf = m*buf + g; w -= lr * (g + m*buf)``. Zero initialisation: the problem is
    convex, and it makes the result independent of any weight-init randomness.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        learning_rates: Sequence[float],
        device: torch.device,
    ) -> None:
        self.learning_rates = tuple(learning_rates)
        self.num_heads = len(self.learning_rates)
        self.num_classes = num_classes
        width = self.num_heads * num_classes
        self.weight = torch.zeros(dim, width, device=device)
        self.bias = torch.zeros(width, device=device)
        self.weight_buf = torch.zeros_like(self.weight)
        self.bias_buf = torch.zeros_like(self.bias)
        self.column_lr = torch.tensor(
            self.learning_rates, dtype=torch.float32, device=device
        ).repeat_interleave(num_classes)

    def subset(self, heads: Sequence[int]) -> StackedSoftmaxHeads:
        """The classifiers ``heads`` (indices) as a separate object (weights copied)."""
        dim, device = self.weight.shape[0], self.weight.device
        out = StackedSoftmaxHeads(
            dim, self.num_classes, [self.learning_rates[i] for i in heads], device
        )
        columns = torch.cat(
            [torch.arange(i * self.num_classes, (i + 1) * self.num_classes) for i in heads]
        ).to(device)
        out.weight = self.weight[:, columns].clone()
        out.bias = self.bias[columns].clone()
        out.weight_buf = self.weight_buf[:, columns].clone()
        out.bias_buf = self.bias_buf[columns].clone()
        return out

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, H, C)."""
        return torch.addmm(self.bias, x, self.weight).view(x.shape[0], self.num_heads, -1)

    def step(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        lr_factor: float,
        row_weight: torch.Tensor | None = None,
    ) -> None:
        """One SGD step on the batch (x, y).

        ``row_weight`` (B, H): the weight of each row in each head's loss; default ``1/B`` (the
        batch-mean loss) for all. A zero weight keeps a row out of a head's gradient.
        """
        batch = x.shape[0]
        grad_logits = torch.softmax(self.logits(x), dim=2)  # (B, H, C)
        target = y.view(batch, 1, 1).expand(batch, self.num_heads, 1)
        grad_logits.scatter_add_(2, target, torch.full_like(target, -1.0, dtype=x.dtype))
        if row_weight is None:
            grad_logits.div_(batch)
        else:
            grad_logits.mul_(row_weight.unsqueeze(2))
        grad_logits = grad_logits.view(batch, -1)
        for param, buf, grad in (
            (self.weight, self.weight_buf, x.T @ grad_logits),
            (self.bias, self.bias_buf, grad_logits.sum(0)),
        ):
            buf.mul_(MOMENTUM).add_(grad)
            update = grad.add_(buf, alpha=MOMENTUM)
            param.sub_(update.mul_(self.column_lr * lr_factor))

    def scores(self, features: torch.Tensor, labels: torch.Tensor) -> dict:
        """Per-head top-1 / top-5 accuracy and mean cross-entropy on (features, labels)."""
        top1 = torch.zeros(self.num_heads, dtype=torch.float64)
        top5 = torch.zeros(self.num_heads, dtype=torch.float64)
        loss = torch.zeros(self.num_heads, dtype=torch.float64)
        k5 = min(5, self.num_classes)
        for start in range(0, features.shape[0], SCORE_CHUNK):
            x = features[start : start + SCORE_CHUNK]
            y = labels[start : start + SCORE_CHUNK]
            logits = self.logits(x)  # (B, H, C)
            known = y < self.num_classes  # a class never seen in training can only be wrong
            y_safe = torch.where(known, y, torch.zeros_like(y))
            target = y_safe.view(-1, 1, 1).expand(-1, self.num_heads, 1)
            top = logits.topk(k5, dim=2).indices  # (B, H, k5)
            hit = (top == target) & known.view(-1, 1, 1)
            top1 += hit[:, :, 0].sum(0).double().cpu()
            top5 += hit.any(dim=2).sum(0).double().cpu()
            nll = -torch.log_softmax(logits, dim=2).gather(2, target).squeeze(2)  # (B, H)
            # The loss of an unseen class is infinite in principle; it is left out of the mean.
            loss += torch.where(known.view(-1, 1), nll, 0.0).sum(0).double().cpu()
        n = features.shape[0]
        return {
            "top1": (top1 / n).tolist(),
            "top5": (top5 / n).tolist(),
            "loss": (loss / n).tolist(),
        }


def cosine_factor(step: int, total_steps: int) -> float:
    """Cosine decay from 1 to 0 over ``total_steps`` (no warm-up), as in the paper's linear eval."""
    return 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
