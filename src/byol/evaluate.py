"""Evaluation protocols for a trained encoder: linear probe, weighted k-NN and the pixel baseline.

Everything here works on plain tensors and ``nn.Module`` objects, so it is independent of how the
encoder was trained or the data loaded.

Protocols (see the method reference, section "Evaluation protocols"):

* :func:`linear_probe` - the paper's linear evaluation on *pre-computed* frozen features: a softmax
  classifier trained with SGD (Nesterov momentum 0.9, no weight decay, batch 1024, cosine learning
  rate decay to 0). The learning rate is chosen from a grid (paper: 0.4, 0.3, 0.2, 0.1, 0.05) on a
  validation part held out from the *training* features; the classifier is then retrained on the
  whole training set with that rate and scored once on the test set. The test set never takes part
  in a choice: :func:`select_learning_rate` only ever receives training tensors.
* :func:`linear_probe_augmented` - the same, but the frozen encoder is run on freshly augmented
  training images (random crop + horizontal flip) every epoch, as in the paper. Much slower.
* :func:`knn_accuracy` - the weighted k-nearest-neighbour monitor common in reproductions
  (InstDisc style): cosine similarity on L2-normalised features, the top-k neighbours vote for
  their class with weight ``exp(similarity / temperature)``.
* :func:`pixel_features` - normalised raw pixels, the baseline any learnt representation must beat.

Departures from the paper, on purpose:

* Feature standardisation (``standardize=True``): each feature dimension is shifted and scaled
  with the mean / std of the training features (no labels, never the test set). The paper's
  learning-rate grid assumes BatchNorm-normalised ResNet features of unit scale; standardising
  makes the same grid work for any encoder (or raw pixels) whatever the scale of its outputs.
* The default number of epochs on pre-computed features is 100 (paper: 80 with augmentation);
  without augmentation an epoch is cheap and the extra epochs help convergence.
* The grid's learning rates are trained *simultaneously*: the classifiers are stacked into one
  ``(D, H*C)`` weight matrix and trained on the same minibatches, which costs about as much as a
  single run. The classifiers do not interact: each column block only receives the gradient of its
  own loss. The final "retrain on the whole training set" classifiers (one per rate, the chosen
  one kept) are trained in the same pass, with the held-out rows weighted out of the selection
  classifiers' losses; see :func:`_fit_and_select`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from byol.errors import ConfigError, DataError

__all__ = [
    "PAPER_LEARNING_RATES",
    "extract_features",
    "format_results_table",
    "knn_accuracy",
    "knn_predict",
    "linear_probe",
    "linear_probe_augmented",
    "pixel_features",
    "select_learning_rate",
    "topk_accuracy",
]

#: The paper's learning-rate sweep for linear evaluation.
PAPER_LEARNING_RATES: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1, 0.05)

_MOMENTUM = 0.9
# Features are scored in chunks of this many rows so that (rows, L*C) logits stay small.
_SCORE_CHUNK = 8192


# --------------------------------------------------------------------------------------------
# Image preprocessing and feature extraction
# --------------------------------------------------------------------------------------------


def _check_images(images: torch.Tensor, name: str) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise DataError(f"{name} must be a (N, C, H, W) tensor, got {shape}")
    if images.shape[0] == 0:
        raise DataError(f"{name} is empty (0 images)")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise DataError(f"{name} must be uint8 or floating point in [0, 1], got {images.dtype}")


def _channel_stats(
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


def _to_unit_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; float input is taken to be in [0, 1] already."""
    if batch.dtype == torch.uint8:
        return batch.float().div_(255.0)
    return batch.float()


def _resize(x: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or (x.shape[-2] == size and x.shape[-1] == size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _center_crop(x: torch.Tensor, fraction: float) -> torch.Tensor:
    if fraction >= 1.0:
        return x
    h, w = x.shape[-2:]
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top : top + ch, left : left + cw]


def _default_device(encoder: nn.Module | None, fallback: torch.Tensor) -> torch.device:
    if encoder is not None:
        for tensor in (*encoder.parameters(), *encoder.buffers()):
            return tensor.device
    return fallback.device


@torch.no_grad()
def _encode(
    encoder: nn.Module,
    images: torch.Tensor,
    preprocess: Callable[[torch.Tensor], torch.Tensor],
    *,
    batch_size: int,
    device: torch.device,
    channels_last: bool,
    indices: torch.Tensor | None = None,
    output_device: torch.device | None = None,
) -> torch.Tensor:
    """Runs ``encoder`` in eval mode over ``images[indices]``; returns float32 (N, D) on
    ``output_device`` (default: the CPU).

    ``preprocess`` gets a float [0, 1] batch on ``device`` and returns the normalised network input.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    was_training = encoder.training
    encoder.eval()
    try:
        n = images.shape[0] if indices is None else indices.numel()
        chunks = []
        for start in range(0, n, batch_size):
            if indices is None:
                batch = images[start : start + batch_size]
            else:
                batch = images[indices[start : start + batch_size]]
            x = preprocess(_to_unit_float(batch.to(device, non_blocking=True)))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            chunks.append(encoder(x).flatten(1).float().to(output_device or "cpu"))
        return torch.cat(chunks)
    finally:
        encoder.train(was_training)


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    images: torch.Tensor,
    *,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    size: int | None = None,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """Frozen-encoder features of ``images``.

    Args:
        encoder: maps a normalised (B, C, size, size) batch to (B, D) (or (B, D, 1, 1): the output
            is flattened). It is put in eval mode for the call - BatchNorm uses its running
            statistics, so a sample's features do not depend on the rest of its batch - and its
            previous mode is restored afterwards.
        images: (N, C, H, W), uint8 in [0, 255] or float in [0, 1]; may stay on the CPU, batches
            are moved to ``device`` one at a time.
        mean, std: per-channel normalisation applied after scaling to [0, 1].
        size: when given and different from (H, W), images are resized to (size, size)
            (bilinear, antialiased; non-square images are not cropped, so they get squashed).
        batch_size: images per forward pass.
        device: where the encoder runs; default: the device of its parameters.
        channels_last: feed the encoder channels-last tensors (faster on GPUs for convnets).

    Returns:
        float32 (N, D) tensor on the CPU.
    """
    _check_images(images, "images")
    run_device = torch.device(device) if device is not None else _default_device(encoder, images)
    mean_t, std_t = _channel_stats(mean, std, images.shape[1], run_device)

    def preprocess(x: torch.Tensor) -> torch.Tensor:
        return (_resize(x, size) - mean_t) / std_t

    return _encode(
        encoder,
        images,
        preprocess,
        batch_size=batch_size,
        device=run_device,
        channels_last=channels_last,
    )


@torch.no_grad()
def pixel_features(
    images: torch.Tensor,
    *,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    batch_size: int = 4096,
) -> torch.Tensor:
    """The raw-pixel baseline: images scaled to [0, 1], normalised per channel, flattened.

    Returns float32 (N, C*H*W) on the CPU, in (C, H, W) order per row.
    """
    _check_images(images, "images")
    mean_t, std_t = _channel_stats(mean, std, images.shape[1], torch.device("cpu"))
    n = images.shape[0]
    out = torch.empty(n, images[0].numel(), dtype=torch.float32)
    # Converted in batches so a uint8 dataset never has a second full float copy besides `out`.
    for start in range(0, n, batch_size):
        batch = _to_unit_float(images[start : start + batch_size].cpu())
        out[start : start + batch.shape[0]] = ((batch - mean_t) / std_t).flatten(1)
    return out


# --------------------------------------------------------------------------------------------
# Input checks shared by the classifiers
# --------------------------------------------------------------------------------------------


def _check_features(features: torch.Tensor, labels: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(features, torch.Tensor) or features.dim() != 2:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features)
        raise DataError(f"{name}_features must be a 2-D (N, D) tensor, got {shape}")
    if features.shape[0] == 0:
        raise DataError(f"{name}_features is empty (0 rows)")
    labels = _check_labels(labels, name)
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


def _check_labels(labels: torch.Tensor, name: str) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise DataError(
            f"{name}_labels must be a 1-D integer tensor, got {labels.dtype} {tuple(labels.shape)}"
        )
    if labels.numel() and int(labels.min()) < 0:
        raise DataError(f"{name}_labels contain a negative class index ({int(labels.min())})")
    return labels.long()


def _check_same_dim(train: torch.Tensor, test: torch.Tensor) -> None:
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


# --------------------------------------------------------------------------------------------
# k-NN
# --------------------------------------------------------------------------------------------


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
    train_labels = _check_features(train_features, train_labels, "train")
    if query_features.dim() != 2:
        raise DataError(f"query_features must be 2-D (Q, D), got {tuple(query_features.shape)}")
    _check_same_dim(train_features, query_features)
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
    train_labels = _check_labels(train_labels, "train")
    test_labels = _check_features(test_features, test_labels, "test")
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


# --------------------------------------------------------------------------------------------
# Linear probe
# --------------------------------------------------------------------------------------------


class _StackedSoftmaxHeads:
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

    def subset(self, heads: Sequence[int]) -> _StackedSoftmaxHeads:
        """The classifiers ``heads`` (indices) as a separate object (weights copied)."""
        dim, device = self.weight.shape[0], self.weight.device
        out = _StackedSoftmaxHeads(
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
            buf.mul_(_MOMENTUM).add_(grad)
            update = grad.add_(buf, alpha=_MOMENTUM)
            param.sub_(update.mul_(self.column_lr * lr_factor))

    def scores(self, features: torch.Tensor, labels: torch.Tensor) -> dict:
        """Per-head top-1 / top-5 accuracy and mean cross-entropy on (features, labels)."""
        top1 = torch.zeros(self.num_heads, dtype=torch.float64)
        top5 = torch.zeros(self.num_heads, dtype=torch.float64)
        loss = torch.zeros(self.num_heads, dtype=torch.float64)
        k5 = min(5, self.num_classes)
        for start in range(0, features.shape[0], _SCORE_CHUNK):
            x = features[start : start + _SCORE_CHUNK]
            y = labels[start : start + _SCORE_CHUNK]
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


def _cosine_factor(step: int, total_steps: int) -> float:
    """Cosine decay from 1 to 0 over ``total_steps`` (no warm-up), as in the paper's linear eval."""
    return 0.5 * (1.0 + math.cos(math.pi * step / total_steps))


def _standardizer(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and (population) std of (N, D) features."""
    mean = features.float().mean(0)
    # Two-pass variance over row chunks: as exact as torch.std, several times faster on large
    # (N, D) arrays because it never materialises an (N, D) temporary.
    sum_sq = torch.zeros_like(mean)
    for start in range(0, features.shape[0], 4096):
        centred = features[start : start + 4096].float() - mean
        sum_sq += (centred * centred).sum(0)
    std = (sum_sq / features.shape[0]).sqrt()
    # Constant dimensions carry no information; dividing them by ~0 would only amplify rounding.
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return mean, std


def _check_probe_config(
    learning_rates: Sequence[float], epochs: int, batch_size: int, val_fraction: float
) -> tuple[float, ...]:
    rates = tuple(float(lr) for lr in learning_rates)
    if not rates:
        raise ConfigError("learning_rates is empty")
    if any(not lr > 0 for lr in rates):
        raise ConfigError(f"learning_rates must all be > 0, got {list(rates)}")
    if len(set(rates)) != len(rates):
        raise ConfigError(f"learning_rates contain duplicates: {list(rates)}")
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
    return rates


def _resolve_num_classes(num_classes: int | None, train_labels: torch.Tensor) -> int:
    largest = int(train_labels.max())
    if num_classes is None:
        return largest + 1
    if num_classes <= largest:
        raise ConfigError(f"num_classes={num_classes} but train_labels contain class {largest}")
    return num_classes


def _holdout_split(
    labels: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified split of ``range(len(labels))`` into (fit, val) indices, reproducible by seed.

    Each class with at least two samples gives ``round(fraction * count)`` of them (at least one,
    never all) to the validation part, so every class is represented in both parts.
    """
    generator = torch.Generator().manual_seed(seed)
    labels_cpu = labels.cpu()
    # Random order, then a stable sort by class: each class's members end up contiguous and
    # in random order, and the first n_val of each class go to the validation part.
    shuffled = torch.randperm(labels_cpu.numel(), generator=generator)
    by_class = shuffled[torch.sort(labels_cpu[shuffled], stable=True).indices]
    sorted_labels = labels_cpu[by_class]
    counts = torch.bincount(labels_cpu)
    class_start = torch.cumsum(counts, 0) - counts
    rank_in_class = torch.arange(labels_cpu.numel()) - class_start[sorted_labels]
    n_val = torch.round(counts.double() * fraction).long().clamp(min=1)
    n_val = torch.minimum(n_val, counts - 1).clamp(min=0)  # classes of one sample stay in fit
    in_val = rank_in_class < n_val[sorted_labels]
    val_idx = by_class[in_val].sort().values
    if val_idx.numel() == 0:
        raise DataError(
            "the training set is too small to hold out a validation part for choosing the "
            "learning rate (every class has a single sample)"
        )
    return by_class[~in_val].sort().values, val_idx


def _pick_best(rates: Sequence[float], val_top1: list[float], val_loss: list[float]) -> float:
    """Highest validation top-1; ties (common on easy problems) go to the lower validation loss,
    then to the earlier rate in the grid."""
    order = sorted(range(len(rates)), key=lambda i: (-val_top1[i], val_loss[i], i))
    return rates[order[0]]


_BatchFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _fit_and_select(
    train_labels: torch.Tensor,
    batch_for: _BatchFn,
    val_features_for: Callable[[torch.Tensor], torch.Tensor],
    *,
    dim: int,
    rates: Sequence[float],
    num_classes: int,
    epochs: int,
    batch_size: int,
    val_fraction: float,
    seed: int,
    device: torch.device,
    fit_final: bool,
) -> tuple[dict, _StackedSoftmaxHeads | None]:
    """Learning-rate selection and, when ``fit_final``, the final classifiers, in one pass.

    Receives training data only (through ``batch_for(indices)`` -> (features, labels) of training
    rows and ``val_features_for(indices)`` -> un-augmented features of held-out training rows),
    so nothing derived from the test set can reach the choice.

    Two stacks of heads, one per learning rate each, are trained on the same minibatches drawn
    from the whole training set:

    * selection heads, for which held-out rows have zero weight: each step is the mean loss over
      the batch's fitting rows, so they learn from the fitting part only;
    * final heads (``fit_final``), which use every row: exactly the "retrain on the full training
      set" run, for every rate, so the chosen one needs no second pass.

    Returns ``(selection, final_heads)``: ``selection`` has ``learning_rate``,
    ``val_top1_by_lr``, ``val_loss_by_lr``, ``n_val``; ``final_heads`` holds one head per rate
    (``None`` unless ``fit_final``).
    """
    n = train_labels.shape[0]
    selecting = len(rates) > 1
    if selecting:
        fit_idx, val_idx = _holdout_split(train_labels, val_fraction, seed)
        is_fit = torch.zeros(n, dtype=torch.bool)
        is_fit[fit_idx] = True
        is_fit = is_fit.to(device)
    n_select = len(rates) if selecting else 0
    head_rates = [*(rates if selecting else ()), *(rates if fit_final else ())]
    if not head_rates:
        raise ConfigError("nothing to train: a single learning rate and no final fit requested")
    heads = _StackedSoftmaxHeads(dim, num_classes, head_rates, device)

    generator = torch.Generator().manual_seed(seed)
    total_steps = epochs * math.ceil(n / batch_size)
    step = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            indices = order[start : start + batch_size]
            x, y = batch_for(indices)
            row_weight = None
            if selecting:
                fit_rows = is_fit[indices.to(device)].to(x.dtype)
                select_weight = fit_rows / fit_rows.sum().clamp(min=1.0)
                row_weight = torch.cat(
                    [
                        select_weight.view(-1, 1).expand(-1, n_select),
                        torch.full(
                            (x.shape[0], len(head_rates) - n_select),
                            1.0 / x.shape[0],
                            dtype=x.dtype,
                            device=x.device,
                        ),
                    ],
                    dim=1,
                )
            heads.step(x, y, _cosine_factor(step, total_steps), row_weight)
            step += 1

    final_heads = heads.subset(range(n_select, len(head_rates))) if fit_final else None
    if not selecting:
        selection = {
            "learning_rate": rates[0],
            "val_top1_by_lr": {},
            "val_loss_by_lr": {},
            "n_val": 0,
        }
        return selection, final_heads
    val = heads.subset(range(n_select)).scores(
        val_features_for(val_idx).to(device), train_labels[val_idx].to(device)
    )
    selection = {
        "learning_rate": _pick_best(rates, val["top1"], val["loss"]),
        "val_top1_by_lr": dict(zip(rates, val["top1"], strict=True)),
        "val_loss_by_lr": dict(zip(rates, val["loss"], strict=True)),
        "n_val": int(val_idx.numel()),
    }
    return selection, final_heads


def _prepare_features(
    train_features: torch.Tensor, standardize: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    if not standardize:
        return train_features.to(device=device, dtype=torch.float32), None, None
    # One private float32 copy standardised in place: large feature sets are hundreds of MB.
    x = train_features.to(device=device, dtype=torch.float32, copy=True)
    mean, std = _standardizer(x)
    return x.sub_(mean).div_(std), mean, std


@torch.no_grad()
def select_learning_rate(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    *,
    learning_rates: Sequence[float] = PAPER_LEARNING_RATES,
    epochs: int = 100,
    batch_size: int = 1024,
    val_fraction: float = 0.1,
    seed: int = 0,
    standardize: bool = True,
    num_classes: int | None = None,
    device: torch.device | str | None = None,
) -> dict:
    """Chooses the linear-probe learning rate on a part held out from the training features.

    Takes training data only. Gives the same choice and validation scores as
    :func:`linear_probe` with the same arguments (which runs this selection jointly with its
    final fit).

    Returns:
        ``{"learning_rate", "val_top1_by_lr": {lr: top1}, "val_loss_by_lr": {lr: loss},
        "n_val"}``.
    """
    rates = _check_probe_config(learning_rates, epochs, batch_size, val_fraction)
    if len(rates) < 2:
        raise ConfigError(f"select_learning_rate needs at least two rates, got {list(rates)}")
    train_labels = _check_features(train_features, train_labels, "train")
    num_classes = _resolve_num_classes(num_classes, train_labels)
    run_device = torch.device(device) if device is not None else train_features.device
    x, _, _ = _prepare_features(train_features, standardize, run_device)
    y = train_labels.to(run_device)
    selection, _ = _fit_and_select(
        train_labels,
        lambda idx: (x[idx.to(run_device)], y[idx.to(run_device)]),
        lambda idx: x[idx.to(run_device)],
        dim=x.shape[1],
        rates=rates,
        num_classes=num_classes,
        epochs=epochs,
        batch_size=batch_size,
        val_fraction=val_fraction,
        seed=seed,
        device=run_device,
        fit_final=False,
    )
    return selection


@torch.no_grad()
def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    learning_rates: Sequence[float] = PAPER_LEARNING_RATES,
    epochs: int = 100,
    batch_size: int = 1024,
    val_fraction: float = 0.1,
    seed: int = 0,
    standardize: bool = True,
    num_classes: int | None = None,
    device: torch.device | str | None = None,
) -> dict:
    """Linear evaluation on pre-computed frozen features (the paper's protocol, no augmentation).

    1. ``val_fraction`` of the training rows are held out (stratified by class, drawn with
       ``seed``); one classifier per learning rate learns from the remaining rows and the rate
       with the best held-out top-1 is chosen (ties: lower held-out loss).
    2. A classifier trained on *all* training rows with the chosen rate is scored once on the
       test set. Step 1 and 2 share their minibatches (see :func:`_fit_and_select`): the
       final classifiers for every rate are trained alongside the selection ones, which makes
       the whole protocol cost about one training run. The test tensors are only touched after
       the choice is made, by code that cannot change it.

    Training: softmax regression, SGD with Nesterov momentum 0.9, no weight decay, batch
    ``batch_size``, cosine learning-rate decay to 0 over ``epochs``, zero-initialised weights,
    minibatch order from a generator seeded with ``seed``: deterministic given the seed.

    ``standardize`` shifts/scales each feature dimension by the mean/std of the training features
    (never the test ones; no labels used), so the paper's grid - tuned for BatchNorm-normalised
    ResNet features of unit scale - transfers to features of any scale. ``num_classes`` defaults
    to ``max(train_labels) + 1``; a test label outside it counts as an error.

    Returns:
        ``{"top1", "top5", "learning_rate", "val_top1_by_lr", "val_loss_by_lr", "n_train",
        "n_val", "n_test", "epochs", "seconds"}``; ``top5`` is ``None`` with fewer than 5
        classes. With a single learning rate there is nothing to choose: no rows are held out,
        ``val_top1_by_lr`` is empty and ``n_val`` is 0.
    """
    started = time.perf_counter()
    rates = _check_probe_config(learning_rates, epochs, batch_size, val_fraction)
    train_labels = _check_features(train_features, train_labels, "train")
    test_labels = _check_features(test_features, test_labels, "test")
    _check_same_dim(train_features, test_features)
    num_classes = _resolve_num_classes(num_classes, train_labels)
    run_device = torch.device(device) if device is not None else train_features.device

    x, mean, std = _prepare_features(train_features, standardize, run_device)
    y = train_labels.to(run_device)
    selection, final_heads = _fit_and_select(
        train_labels,
        lambda idx: (x[idx.to(run_device)], y[idx.to(run_device)]),
        lambda idx: x[idx.to(run_device)],
        dim=x.shape[1],
        rates=rates,
        num_classes=num_classes,
        epochs=epochs,
        batch_size=batch_size,
        val_fraction=val_fraction,
        seed=seed,
        device=run_device,
        fit_final=True,
    )
    chosen = selection["learning_rate"]
    classifier = final_heads.subset([rates.index(chosen)])

    if mean is None:
        test_x = test_features.to(device=run_device, dtype=torch.float32)
    else:
        test_x = test_features.to(device=run_device, dtype=torch.float32, copy=True)
        test_x.sub_(mean).div_(std)
    test = classifier.scores(test_x, test_labels.to(run_device))
    return {
        "top1": test["top1"][0],
        "top5": test["top5"][0] if num_classes >= 5 else None,
        "learning_rate": chosen,
        "val_top1_by_lr": selection["val_top1_by_lr"],
        "val_loss_by_lr": selection["val_loss_by_lr"],
        "n_train": int(train_features.shape[0]),
        "n_val": selection["n_val"],
        "n_test": int(test_features.shape[0]),
        "epochs": epochs,
        "seconds": time.perf_counter() - started,
    }


# --------------------------------------------------------------------------------------------
# Linear probe with augmentation (frozen encoder run every epoch)
# --------------------------------------------------------------------------------------------


def _pad_crop_flip(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Per-sample random crop of the zero-padded image back to its size, and a random h-flip."""
    n, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    rows = top.view(n, 1) + torch.arange(h, device=x.device)  # (n, h)
    cols = torch.arange(w, device=x.device).expand(n, w)
    cols = torch.where(flip.view(n, 1), cols.flip(1), cols) + left.view(n, 1)  # (n, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, rows.view(n, h, 1), cols.view(n, 1, w)]  # (n,h,w,C)
    return out.permute(0, 3, 1, 2).contiguous()


def _resized_crop_flip(
    x: torch.Tensor,
    size: int,
    scale: tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """Per-sample random resized crop (area ``scale``, aspect ratio in [3/4, 4/3]) to
    (size, size) plus a random h-flip, as one batched ``grid_sample`` (bilinear).

    Like torchvision's sampler, a draw whose box does not fit is redrawn (10 tries); boxes that
    still do not fit are the whole image.
    """
    n, _, h, w = x.shape
    log_ratio = (math.log(3 / 4), math.log(4 / 3))
    width_frac = torch.ones(n)
    height_frac = torch.ones(n)
    pending = torch.ones(n, dtype=torch.bool)
    for _ in range(10):
        area = torch.empty(n).uniform_(scale[0], scale[1], generator=generator)
        ratio = torch.exp(torch.empty(n).uniform_(*log_ratio, generator=generator))
        wf = torch.sqrt(area * ratio * h / w)  # crop width / image width
        hf = torch.sqrt(area / ratio * w / h)
        accept = pending & (wf <= 1) & (hf <= 1)
        width_frac = torch.where(accept, wf, width_frac)
        height_frac = torch.where(accept, hf, height_frac)
        pending &= ~accept
        if not bool(pending.any()):
            break
    # Box centre in normalised [-1, 1] coordinates, uniform over the positions that fit.
    cx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - width_frac)
    cy = (torch.rand(n, generator=generator) * 2 - 1) * (1 - height_frac)
    sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = width_frac * sign
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = height_frac
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta.to(x.device), [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


@torch.no_grad()
def linear_probe_augmented(
    encoder: nn.Module,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    size: int,
    crop: str = "resized",
    crop_scale: tuple[float, float] = (0.08, 1.0),
    padding: int = 4,
    test_crop_fraction: float = 1.0,
    learning_rates: Sequence[float] = PAPER_LEARNING_RATES,
    epochs: int = 80,
    batch_size: int = 1024,
    val_fraction: float = 0.1,
    seed: int = 0,
    standardize: bool = True,
    num_classes: int | None = None,
    device: torch.device | str | None = None,
    encode_batch_size: int = 512,
    channels_last: bool = False,
) -> dict:
    """Linear evaluation with training-time augmentation, the paper's full protocol.

    The encoder stays frozen in eval mode (BatchNorm running statistics); its mode is restored on
    return. Every epoch each training image gets a fresh per-sample augmentation (drawn from a
    generator seeded with ``seed``):

    * ``crop="resized"`` (default, as the paper): random resized crop of area ``crop_scale`` and
      aspect ratio in [3/4, 4/3] straight to ``size``, bilinear (no antialiasing);
    * ``crop="pad"`` (the usual CIFAR choice): zero-pad by ``padding`` pixels, random crop back to
      the image size, then resize to ``size`` if it differs;

    followed by a horizontal flip with probability 0.5. Held-out and test images get a centre
    crop of ``test_crop_fraction`` of their side (1.0, the default: the whole image) resized to
    ``size``.

    The learning rate is chosen as in :func:`linear_probe` (held-out part of the training set,
    scored un-augmented; selection and final classifiers trained on the same augmented batches,
    so the encoder runs ``epochs`` times over the training set, not twice that). With
    ``standardize``, the feature mean/std come from un-augmented training features.

    Returns:
        the same keys as :func:`linear_probe`, plus ``"crop"``.
    """
    started = time.perf_counter()
    rates = _check_probe_config(learning_rates, epochs, batch_size, val_fraction)
    _check_images(train_images, "train_images")
    _check_images(test_images, "test_images")
    train_labels = _check_labels(train_labels, "train")
    test_labels = _check_labels(test_labels, "test")
    for name, images, labels in (
        ("train", train_images, train_labels),
        ("test", test_images, test_labels),
    ):
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{name}_images has {images.shape[0]} images but {name}_labels has "
                f"{labels.shape[0]} entries"
            )
    if crop not in ("resized", "pad"):
        raise ConfigError(f"crop must be 'resized' or 'pad', got {crop!r}")
    if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
        raise ConfigError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
    if padding < 0:
        raise ConfigError(f"padding must be >= 0, got {padding}")
    if not 0 < test_crop_fraction <= 1:
        raise ConfigError(f"test_crop_fraction must be in (0, 1], got {test_crop_fraction}")
    if size < 1:
        raise ConfigError(f"size must be >= 1, got {size}")
    num_classes = _resolve_num_classes(num_classes, train_labels)
    run_device = (
        torch.device(device) if device is not None else _default_device(encoder, train_images)
    )
    mean_t, std_t = _channel_stats(mean, std, train_images.shape[1], run_device)
    encode_options = {
        "batch_size": encode_batch_size,
        "device": run_device,
        "channels_last": channels_last,
    }

    def clean(x: torch.Tensor) -> torch.Tensor:
        return (_resize(_center_crop(x, test_crop_fraction), size) - mean_t) / std_t

    aug_generator = torch.Generator().manual_seed(seed + 1)

    def augmented(x: torch.Tensor) -> torch.Tensor:
        if crop == "resized":
            x = _resized_crop_flip(x, size, crop_scale, aug_generator)
        else:
            x = _resize(_pad_crop_flip(x, padding, aug_generator), size)
        return (x - mean_t) / std_t

    train_clean = _encode(encoder, train_images, clean, **encode_options).to(run_device)
    if standardize:
        feat_mean, feat_std = _standardizer(train_clean)
        train_clean.sub_(feat_mean).div_(feat_std)  # a fresh tensor of ours
    labels_dev = train_labels.to(run_device)

    def batch_for(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = _encode(
            encoder,
            train_images,
            augmented,
            indices=indices,
            output_device=run_device,
            **encode_options,
        )
        if standardize:
            feats = (feats - feat_mean) / feat_std
        return feats, labels_dev[indices.to(run_device)]

    selection, final_heads = _fit_and_select(
        train_labels,
        batch_for,
        lambda idx: train_clean[idx.to(run_device)],
        dim=train_clean.shape[1],
        rates=rates,
        num_classes=num_classes,
        epochs=epochs,
        batch_size=batch_size,
        val_fraction=val_fraction,
        seed=seed,
        device=run_device,
        fit_final=True,
    )
    chosen = selection["learning_rate"]
    classifier = final_heads.subset([rates.index(chosen)])

    test_x = _encode(encoder, test_images, clean, **encode_options).to(run_device)
    if standardize:
        test_x.sub_(feat_mean).div_(feat_std)
    test = classifier.scores(test_x, test_labels.to(run_device))
    return {
        "top1": test["top1"][0],
        "top5": test["top5"][0] if num_classes >= 5 else None,
        "learning_rate": chosen,
        "val_top1_by_lr": selection["val_top1_by_lr"],
        "val_loss_by_lr": selection["val_loss_by_lr"],
        "n_train": int(train_images.shape[0]),
        "n_val": selection["n_val"],
        "n_test": int(test_images.shape[0]),
        "epochs": epochs,
        "crop": crop,
        "seconds": time.perf_counter() - started,
    }


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100.0 * value:.2f}"


def format_results_table(rows: Sequence[dict]) -> str:
    """Markdown table of evaluation results.

    Each row is a dict with ``name`` and ``protocol`` (free text, e.g. "linear", "k-NN (k=200)"),
    and optionally ``top1`` / ``top5`` (fractions in [0, 1], shown as percentages) and
    ``learning_rate`` (or ``lr``). Missing values show as "—".
    """
    lines = [
        "| name | protocol | top-1 (%) | top-5 (%) | lr |",
        "|---|---|---:|---:|---:|",
    ]
    for row in rows:
        lr = row.get("learning_rate", row.get("lr"))
        cells = [
            str(row.get("name", "")).replace("|", "\\|"),
            str(row.get("protocol", "")).replace("|", "\\|"),
            _percent(row.get("top1")),
            _percent(row.get("top5")),
            "—" if lr is None else f"{lr:g}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
