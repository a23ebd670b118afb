"""The weighted k-nearest-neighbour protocol (InstDisc style), the monitor of most SSL
reproductions: cosine similarity on L2-normalised features, the top-k neighbours vote for their
class with weight ``exp(similarity / temperature)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from .checks import check_features, check_labels, check_same_dim, topk_accuracy

__all__ = ["knn_accuracy", "knn_predict"]


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    *,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    chunk_size: int = 1024,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Weighted k-NN class scores of each query against the bank ``train_features``.

    Both sets are L2-normalised; each query's ``k`` most cosine-similar bank points (``k`` clamped
    to the bank size) vote for their label with weight ``exp(similarity / temperature)``.

    Returns:
        float32 (Q, num_classes) summed vote weights; ``num_classes`` defaults to
        ``max(train_labels) + 1``. Queries are processed ``chunk_size`` at a time so the
        similarity matrix never exceeds (chunk_size, N_bank). Computed on ``device`` (default:
        the device of ``train_features``), where the scores are returned.
    """
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    train_labels = check_features(train_features, train_labels, "train")
    if query_features.dim() != 2:
        raise DataError(f"query_features must be 2-D (Q, D), got {tuple(query_features.shape)}")
    check_same_dim(train_features, query_features)
    if num_classes is None:
        num_classes = int(train_labels.max()) + 1
    elif num_classes <= int(train_labels.max()):
        raise ConfigError(
            f"num_classes={num_classes} but train_labels contain class {int(train_labels.max())}"
        )

    run_device = torch.device(device) if device is not None else train_features.device
    bank = F.normalize(train_features.to(device=run_device, dtype=torch.float32), dim=1)
    bank_labels = train_labels.to(bank.device)
    k = min(k, bank.shape[0])
    scores = []
    for start in range(0, query_features.shape[0], chunk_size):
        query = query_features[start : start + chunk_size].to(bank.device, torch.float32)
        query = F.normalize(query, dim=1)
        similarity, neighbour = (query @ bank.T).topk(k, dim=1)
        weight = (similarity / temperature).exp()
        votes = torch.zeros(query.shape[0], num_classes, device=bank.device)
        votes.scatter_add_(1, bank_labels[neighbour], weight)
        scores.append(votes)
    if not scores:
        return torch.zeros(0, num_classes, device=bank.device)
    return torch.cat(scores)


@torch.no_grad()
def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
    device: torch.device | str | None = None,
) -> dict:
    """Weighted k-NN accuracy of the test set against the training bank (see :func:`knn_predict`).

    Returns:
        ``{"top1", "top5", "k", "temperature", "n_train", "n_test"}``; ``top5`` is ``None`` with
        fewer than 5 classes, where it would be meaningless. ``k`` is the value used (clamped to
        the bank size).
    """
    train_labels = check_labels(train_labels, "train")
    test_labels = check_features(test_features, test_labels, "test")
    num_classes = max(int(train_labels.max()), int(test_labels.max())) + 1
    scores = knn_predict(
        train_features,
        train_labels,
        test_features,
        k=k,
        temperature=temperature,
        num_classes=num_classes,
        chunk_size=chunk_size,
        device=device,
    )
    return {
        "top1": topk_accuracy(scores, test_labels, 1),
        "top5": topk_accuracy(scores, test_labels, 5) if num_classes >= 5 else None,
        "k": min(k, train_features.shape[0]),
        "temperature": temperature,
        "n_train": train_features.shape[0],
        "n_test": test_features.shape[0],
    }
