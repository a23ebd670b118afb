"""Reference points a BYOL result is compared with: a random-initialised encoder (same
architecture, untrained), raw pixels (see :func:`byol.evaluate.pixel_features`) and, as an
upper reference, the same encoder trained *with* labels for a given wall-clock budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .augment.crops import pad_crop_flip
from .evaluate import topk_accuracy
from .evaluate.checks import channel_stats
from .runtime import autocast, resolve_precision

__all__ = ["random_init_encoder", "train_supervised"]


def random_init_encoder(
    arch: str,
    *,
    small_images: bool,
    in_channels: int,
    seed: int = 0,
    image_size: int | None = None,
) -> nn.Module:
    """An untrained encoder of ``arch``, initialised from ``seed``: the baseline BYOL must beat.

    The caller's global random state is left as it was (``fork_rng``).
    """
    from . import backbones

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder, _ = backbones.build(
            arch, small_images=small_images, in_channels=in_channels, image_size=image_size
        )
    return encoder


def train_supervised(
    encoder: nn.Module,
    feature_dim: int,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    seconds: float,
    batch_size: int = 256,
    lr: float = 0.1,
    weight_decay: float = 5e-4,
    padding: int = 2,
    seed: int = 0,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> dict:
    """Train ``encoder`` + a linear head with cross-entropy for ``seconds`` of wall-clock time.

    SGD (Nesterov momentum 0.9, weight decay), a learning rate that decays linearly to 0 with
    the elapsed fraction of the budget, random translation + flip. ``precision`` (``fp32``,
    ``bf16``, ``fp16`` or ``auto``, as ``byol train --precision``) is the forward's autocast,
    so that a reference run gets the same arithmetic as the BYOL run it is compared with.
    Returns test top-1/top-5 of the trained classifier, the epochs done, the seconds used and
    the precision.
    """
    device = torch.device(device)
    precision = resolve_precision(precision, device)
    num_classes = int(train_labels.max()) + 1
    model = nn.Sequential(encoder, nn.Flatten(1), nn.Linear(feature_dim, num_classes)).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay
    )
    mean_t, std_t = channel_stats(mean, std, train_images.shape[1], torch.device("cpu"))

    def prepare(images: torch.Tensor) -> torch.Tensor:
        return ((images.float() / 255.0 - mean_t) / std_t).to(device)

    start = time.perf_counter()
    steps, epochs = _train_until(model, optimizer, train_images, train_labels, prepare,
                                 start=start, seconds=seconds, lr=lr, batch_size=batch_size,
                                 padding=padding, seed=seed, precision=precision)  # fmt: skip
    used = time.perf_counter() - start
    return {**_test_scores(model, prepare, test_images, test_labels, num_classes),
            "epochs": epochs, "steps": steps, "seconds": used,
            "precision": precision}  # fmt: skip


def _train_until(model: nn.Module, optimizer: torch.optim.Optimizer, train_images: torch.Tensor,
                 train_labels: torch.Tensor, prepare: Callable[[torch.Tensor], torch.Tensor], *,
                 start: float, seconds: float, lr: float, batch_size: int, padding: int,
                 seed: int, precision: str) -> tuple[int, float]:  # fmt: skip
    """SGD steps until ``seconds`` after ``start``, the rate decaying linearly with the elapsed
    fraction; returns the steps and epochs done."""
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    steps = 0
    epochs = 0.0
    n = len(train_images)
    model.train()
    while time.perf_counter() - start < seconds:
        order = torch.randperm(n, generator=generator)
        for first in range(0, n - batch_size + 1, batch_size):
            elapsed = (time.perf_counter() - start) / seconds
            if elapsed >= 1.0:
                break
            for group in optimizer.param_groups:
                group["lr"] = lr * (1.0 - elapsed)
            index = order[first : first + batch_size]
            images = pad_crop_flip(
                train_images[index].float(), padding, generator, padding_mode="replicate"
            )
            _supervised_step(model, optimizer, prepare(images), train_labels[index].to(device),
                             precision)  # fmt: skip
            steps += 1
            epochs += batch_size / n
    return steps, epochs


def _supervised_step(model: nn.Module, optimizer: torch.optim.Optimizer, inputs: torch.Tensor,
                     labels: torch.Tensor, precision: str) -> None:  # fmt: skip
    """One SGD step on the cross-entropy, the forward under ``precision``'s autocast."""
    with autocast(precision, inputs.device):
        logits = model(inputs)
    loss = F.cross_entropy(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


@torch.no_grad()
def _test_scores(model, prepare, images: torch.Tensor, labels: torch.Tensor, num_classes: int):
    model.eval()
    scores = torch.cat([model(prepare(images[i : i + 1024])).cpu()
                        for i in range(0, len(images), 1024)])  # fmt: skip
    return {
        "top1": topk_accuracy(scores, labels, 1),
        "top5": topk_accuracy(scores, labels, 5) if num_classes >= 5 else None,
    }
