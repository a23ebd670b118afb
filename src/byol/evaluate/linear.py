"""The paper's linear evaluation on frozen features: a softmax classifier trained with SGD
(Nesterov momentum 0.9, no weight decay, batch 1024, cosine learning rate decay to 0). The
learning rate is chosen from a grid (paper: 0.4, 0.3, 0.2, 0.1, 0.05) on a validation part held
out from the *training* features; the classifier is then retrained on the whole training set
with that rate and scored once on the test set. The test set never takes part in a choice:
:func:`fit_and_select` only ever receives training tensors.

Departures from the paper, on purpose:

* Feature standardisation (``standardize=True``): each feature dimension is shifted and scaled
  with the mean / std of the training features (no labels, never the test set). The paper's
  learning-rate grid assumes BatchNorm-normalised ResNet features of unit scale; standardising
  makes the same grid work for any encoder (or raw pixels) whatever the scale of its outputs.
* The default number of epochs on pre-computed features is 100 (paper: 80 with augmentation);
  without augmentation an epoch is cheap and the extra epochs help convergence.
* The grid's learning rates are trained *simultaneously* (:mod:`byol.evaluate.heads`), which
  costs about as much as a single run. The final "retrain on the whole training set"
  classifiers (one per rate, the chosen one kept) are trained in the same pass, with the
  held-out rows weighted out of the selection classifiers' losses (:func:`fit_and_select`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch

from ..errors import ConfigError, DataError
from .checks import check_features, check_same_dim
from .heads import StackedSoftmaxHeads, cosine_factor

__all__ = [
    "PAPER_LEARNING_RATES",
    "fit_and_select",
    "linear_probe",
    "probe_result",
    "select_learning_rate",
]

#: The paper's learning-rate sweep for linear evaluation.
PAPER_LEARNING_RATES: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1, 0.05)


def standardizer(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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


def check_probe_config(
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


def resolve_num_classes(num_classes: int | None, train_labels: torch.Tensor) -> int:
    largest = int(train_labels.max())
    if num_classes is None:
        return largest + 1
    if num_classes <= largest:
        raise ConfigError(f"num_classes={num_classes} but train_labels contain class {largest}")
    return num_classes


def holdout_split(
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


def pick_best(rates: Sequence[float], val_top1: list[float], val_loss: list[float]) -> float:
    """Highest validation top-1; ties (common on easy problems) go to the lower validation loss,
    then to the earlier rate in the grid."""
    order = sorted(range(len(rates)), key=lambda i: (-val_top1[i], val_loss[i], i))
    return rates[order[0]]


BatchFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def fit_and_select(
    train_labels: torch.Tensor,
    batch_for: BatchFn,
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
) -> tuple[dict, StackedSoftmaxHeads | None]:
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
        fit_idx, val_idx = holdout_split(train_labels, val_fraction, seed)
        is_fit = torch.zeros(n, dtype=torch.bool)
        is_fit[fit_idx] = True
        is_fit = is_fit.to(device)
    n_select = len(rates) if selecting else 0
    head_rates = [*(rates if selecting else ()), *(rates if fit_final else ())]
    if not head_rates:
        raise ConfigError("nothing to train: a single learning rate and no final fit requested")
    heads = StackedSoftmaxHeads(dim, num_classes, head_rates, device)

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
                row_weight = _row_weights(is_fit[indices.to(device)].to(x.dtype), n_select,
                                          len(head_rates) - n_select)  # fmt: skip
            heads.step(x, y, cosine_factor(step, total_steps), row_weight)
            step += 1

    final_heads = heads.subset(range(n_select, len(head_rates))) if fit_final else None
    if not selecting:
        return {"learning_rate": rates[0], "val_top1_by_lr": {}, "val_loss_by_lr": {},
                "n_val": 0}, final_heads  # fmt: skip
    val = heads.subset(range(n_select)).scores(
        val_features_for(val_idx).to(device), train_labels[val_idx].to(device)
    )
    selection = {
        "learning_rate": pick_best(rates, val["top1"], val["loss"]),
        "val_top1_by_lr": dict(zip(rates, val["top1"], strict=True)),
        "val_loss_by_lr": dict(zip(rates, val["loss"], strict=True)),
        "n_val": int(val_idx.numel()),
    }
    return selection, final_heads


def _row_weights(fit_rows: torch.Tensor, n_select: int, n_final: int) -> torch.Tensor:
    """(B, heads) loss weights: the selection heads average over the batch's fitting rows
    (held-out rows weigh 0), the final heads over every row."""
    select_weight = fit_rows / fit_rows.sum().clamp(min=1.0)
    return torch.cat(
        [
            select_weight.view(-1, 1).expand(-1, n_select),
            torch.full((fit_rows.shape[0], n_final), 1.0 / fit_rows.shape[0],
                       dtype=fit_rows.dtype, device=fit_rows.device),
        ],
        dim=1,
    )  # fmt: skip


def probe_result(
    test: dict, selection: dict, *, num_classes: int, n_train: int, n_test: int, epochs: int,
    started: float,
) -> dict:  # fmt: skip
    """The result dict of a linear probe from the chosen head's test scores and the selection."""
    return {
        "top1": test["top1"][0], "top5": test["top5"][0] if num_classes >= 5 else None,
        "learning_rate": selection["learning_rate"],
        "val_top1_by_lr": selection["val_top1_by_lr"],
        "val_loss_by_lr": selection["val_loss_by_lr"], "n_train": n_train,
        "n_val": selection["n_val"], "n_test": n_test, "epochs": epochs,
        "seconds": time.perf_counter() - started,
    }  # fmt: skip


def _fit_on_features(
    x: torch.Tensor, labels: torch.Tensor, *, fit_final: bool, **options
) -> tuple[dict, StackedSoftmaxHeads | None]:
    """:func:`fit_and_select` on pre-computed (already standardised) training features ``x``."""
    y = labels.to(x.device)
    return fit_and_select(
        labels, lambda idx: (x[idx.to(x.device)], y[idx.to(x.device)]),
        lambda idx: x[idx.to(x.device)], dim=x.shape[1], device=x.device, fit_final=fit_final,
        **options,
    )  # fmt: skip


def prepare_features(
    train_features: torch.Tensor, standardize: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    if not standardize:
        return train_features.to(device=device, dtype=torch.float32), None, None
    # One private float32 copy standardised in place: large feature sets are hundreds of MB.
    x = train_features.to(device=device, dtype=torch.float32, copy=True)
    mean, std = standardizer(x)
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
    rates = check_probe_config(learning_rates, epochs, batch_size, val_fraction)
    if len(rates) < 2:
        raise ConfigError(f"select_learning_rate needs at least two rates, got {list(rates)}")
    train_labels = check_features(train_features, train_labels, "train")
    num_classes = resolve_num_classes(num_classes, train_labels)
    run_device = torch.device(device) if device is not None else train_features.device
    x, _, _ = prepare_features(train_features, standardize, run_device)
    selection, _ = _fit_on_features(
        x, train_labels, rates=rates, num_classes=num_classes, epochs=epochs,
        batch_size=batch_size, val_fraction=val_fraction, seed=seed, fit_final=False,
    )  # fmt: skip
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
       test set. Step 1 and 2 share their minibatches (see :func:`fit_and_select`): the
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
    rates = check_probe_config(learning_rates, epochs, batch_size, val_fraction)
    train_labels = check_features(train_features, train_labels, "train")
    test_labels = check_features(test_features, test_labels, "test")
    check_same_dim(train_features, test_features)
    num_classes = resolve_num_classes(num_classes, train_labels)
    run_device = torch.device(device) if device is not None else train_features.device

    x, mean, std = prepare_features(train_features, standardize, run_device)
    selection, final_heads = _fit_on_features(
        x, train_labels, rates=rates, num_classes=num_classes, epochs=epochs,
        batch_size=batch_size, val_fraction=val_fraction, seed=seed, fit_final=True,
    )  # fmt: skip
    chosen = selection["learning_rate"]
    classifier = final_heads.subset([rates.index(chosen)])

    if mean is None:
        test_x = test_features.to(device=run_device, dtype=torch.float32)
    else:
        test_x = test_features.to(device=run_device, dtype=torch.float32, copy=True)
        test_x.sub_(mean).div_(std)
    test = classifier.scores(test_x, test_labels.to(run_device))
    return probe_result(
        test, selection, num_classes=num_classes, n_train=int(train_features.shape[0]),
        n_test=int(test_features.shape[0]), epochs=epochs, started=started,
    )  # fmt: skip
