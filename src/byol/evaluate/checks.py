"""Input checks shared by the evaluation protocols: each names the tensor at fault."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import ConfigError, DataError

__all__ = [
    "channel_stats",
    "check_features",
    "check_images",
    "check_labels",
    "check_same_dim",
    "topk_accuracy",
]


def check_images(images: torch.Tensor, name: str) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise DataError(f"{name} must be a (N, C, H, W) tensor, got {shape}")
    if images.shape[0] == 0:
        raise DataError(f"{name} is empty (0 images)")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise DataError(f"{name} must be uint8 or floating point in [0, 1], got {images.dtype}")


def channel_stats(
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    channels: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=device).flatten()
    std_t = torch.as_tensor(std, dtype=torch.float32, device=device).flatten()
    if mean_t.numel() != channels or std_t.numel() != channels:
        raise ConfigError(
            f"mean/std have {mean_t.numel()}/{std_t.numel()} values but the images have "
            f"{channels} channels"
        )
    if bool((std_t <= 0).any()):
        raise ConfigError(f"std must be positive, got {std_t.tolist()}")
    return mean_t.view(1, -1, 1, 1), std_t.view(1, -1, 1, 1)


def check_features(features: torch.Tensor, labels: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(features, torch.Tensor) or features.dim() != 2:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features)
        raise DataError(f"{name}_features must be a 2-D (N, D) tensor, got {shape}")
    if features.shape[0] == 0:
        raise DataError(f"{name}_features is empty (0 rows)")
    labels = check_labels(labels, name)
    if labels.shape[0] != features.shape[0]:
        raise DataError(
            f"{name}_features has {features.shape[0]} rows but {name}_labels has "
            f"{labels.shape[0]} entries"
        )
    # NaN/inf anywhere in a column makes its mean non-finite: one cheap reduction instead of an
    # element-wise isfinite pass (only absurdly large finite values, ~1e34, give a false alarm).
    if features.is_floating_point() and not bool(torch.isfinite(features.mean(0)).all()):
        raise DataError(f"{name}_features contain NaN or infinite values (did training diverge?)")
    return labels


def check_labels(labels: torch.Tensor, name: str) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise DataError(
            f"{name}_labels must be a 1-D integer tensor, got {labels.dtype} {tuple(labels.shape)}"
        )
    if labels.numel() and int(labels.min()) < 0:
        raise DataError(f"{name}_labels contain a negative class index ({int(labels.min())})")
    return labels.long()


def check_same_dim(train: torch.Tensor, test: torch.Tensor) -> None:
    if train.shape[1] != test.shape[1]:
        raise DataError(
            f"train features are {train.shape[1]}-d but test features are {test.shape[1]}-d"
        )


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of rows of ``scores`` (N, C) whose label is among the ``k`` highest scores.

    ``k`` is clamped to C. Ties are broken by ``torch.topk`` (lower class index first on CPU).
    """
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    hits = (top == labels.to(top.device).view(-1, 1)).any(dim=1)
    return hits.float().mean().item()
