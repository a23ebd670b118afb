"""Semi-supervised evaluation: fine-tune the whole encoder plus a linear head on a few labels.

The paper's second protocol (Grill et al. 2020, section 4, "semi-supervised"): the pre-trained
encoder and a linear classifier are trained together on a class-balanced 1% or 10% of the
labelled training images, and compared with the same architecture trained from scratch on the
same images with the same budget.

* :func:`class_balanced_subset` draws the labelled images: ``round(fraction × n_c)`` of each
  class c (at least one), fixed by the seed, so every method sees the same images.
* :func:`finetune` trains with random crop + horizontal flip (:mod:`byol.augment.crops`), SGD
  with Nesterov momentum 0.9 and a cosine learning rate per step. The learning rate and the
  number of epochs are chosen on a held-out part of the *training* split (disjoint from the
  labelled subset): every rate of the grid is trained for ``epochs`` epochs and scored on the
  held-out images after each; the best (rate, epoch) is retrained from the start with a cosine
  over that many epochs (unless it is a whole selection run, which is then kept: the same
  weights, one training fewer) and scored once on the test images.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..augment.crops import pad_crop_flip, prepare_whole_images, random_resized_crop_flip
from ..errors import ConfigError, DataError
from ..runtime import AUTOCAST_DTYPES, autocast, inference_batch_size, resolve_precision
from .checks import channel_stats, check_labels, topk_accuracy
from .features import encode

__all__ = [
    "FINETUNE_LEARNING_RATES",
    "HEAD_INITS",
    "FineTuneRun",
    "check_learning_rates",
    "class_balanced_subset",
    "finetune",
    "grid_edge",
]

#: How the linear head starts: at random, or fitted on the frozen features first (LP-FT).
HEAD_INITS = ("random", "linear-probe")
#: The default grid of fine-tuning learning rates (chosen on held-out training images). 0.3:
#: pre-trained encoders at 10% of Fashion-MNIST's labels chose it over 0.1, the old top, where
#: scratch stayed at 0.1; 0.001: LP-FT heads on weak encoders want the low end (docs/evaluation.md).
FINETUNE_LEARNING_RATES: tuple[float, ...] = (0.3, 0.1, 0.03, 0.01, 0.003, 0.001)


def class_balanced_subset(
    labels: torch.Tensor, fraction: float, *, seed: int, exclude: torch.Tensor | None = None
) -> torch.Tensor:
    """Sorted indices of ``round(fraction × n_c)`` (at least 1) images of every class c,
    drawn with ``seed`` from the indices not in ``exclude``."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"--label-fraction must be in (0, 1], got {fraction}")
    labels = check_labels(labels, "train").cpu()
    allowed = torch.ones(len(labels), dtype=torch.bool)
    if exclude is not None:
        allowed[exclude] = False
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    picked = []
    for cls in torch.unique(labels).tolist():
        members = order[(labels[order] == cls) & allowed[order]]
        total = int((labels == cls).sum())
        picked.append(members[: max(1, round(fraction * total))])
    return torch.cat(picked).sort().values


def finetune(
    encoder: nn.Module,
    feature_dim: int,
    images: dict[str, torch.Tensor],
    labels: dict[str, torch.Tensor],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    size: int,
    learning_rates: Sequence[float] = FINETUNE_LEARNING_RATES,
    epochs: int = 30,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    crop: str = "pad",
    seed: int = 0,
    device: torch.device | str = "cpu",
    head_init: str = "random",
    precision: str = "fp32",
) -> dict:
    """Fine-tune a copy of ``encoder`` + a linear head on ``images["train"]`` (the labelled
    subset), choose the rate and epochs on ``images["val"]``, score ``images["test"]`` once.

    ``head_init`` ``random`` starts the head from a random initialisation; ``linear-probe``
    first fits it on the frozen encoder's features of the labelled images (LP-FT, Kumar et al.
    2022), so that fine-tuning starts from a working classifier instead of pulling the
    features towards a random one.

    ``images`` and ``labels`` map ``train`` / ``val`` / ``test`` to uint8 (N, C, H, W) images
    and their labels. ``crop`` is ``pad`` (pad-4 random crop, for small images) or ``resized``
    (random resized crop). ``precision`` (``fp32``, ``bf16``, ``fp16`` or ``auto``) is the
    autocast of every forward pass (the loss and the optimiser stay fp32), as ``byol train
    --precision``.
    The encoder itself is left untouched. Returns ``top1``, ``top5``,
    ``learning_rate``, ``epochs``, ``val_top1`` ({rate: [per-epoch top-1]}), ``n_train``,
    ``n_val``, ``n_test``, ``seconds``, ``learning_rates`` (the grid) and ``grid_edge``
    (``largest`` / ``smallest`` when the chosen rate is that end of the grid, else None).
    """
    started = time.perf_counter()
    _check_settings(images, crop=crop, head_init=head_init, epochs=epochs,
                    batch_size=batch_size, learning_rates=learning_rates)  # fmt: skip
    precision = resolve_precision(precision, torch.device(device))
    if precision != "fp32" and precision not in AUTOCAST_DTYPES:
        raise ConfigError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
    job = FineTuneRun(encoder, feature_dim, images, labels, mean=mean, std=std, size=size,
               batch_size=batch_size, weight_decay=weight_decay, crop=crop, seed=seed,
               device=torch.device(device), head_init=head_init,
               precision=precision)  # fmt: skip
    curves, best_lr, best_epoch, model = _choose_and_train(job, learning_rates, epochs)
    test = job.scores(model, "test")
    return {
        "top1": test["top1"], "top5": test["top5"], "learning_rate": best_lr,
        "epochs": best_epoch, "val_top1": {str(lr): curve for lr, curve in curves.items()},
        "n_train": len(images["train"]), "n_val": len(images["val"]),
        "n_test": len(images["test"]), "seconds": time.perf_counter() - started,
        "head_init": head_init, "precision": precision,
        "learning_rates": list(learning_rates), "grid_edge": grid_edge(best_lr, learning_rates),
    }  # fmt: skip


def _check_settings(images: dict[str, torch.Tensor], *, crop: str, head_init: str, epochs: int,
                    batch_size: int, learning_rates: Sequence[float]) -> None:  # fmt: skip
    """Raise a clear error for a fine-tuning setting that cannot work."""
    for part in ("train", "val", "test"):
        if part not in images or len(images[part]) == 0:
            raise DataError(f"fine-tuning needs {part} images")
    if crop not in ("pad", "resized"):
        raise ConfigError(f"crop must be 'pad' or 'resized', got {crop!r}")
    if head_init not in HEAD_INITS:
        raise ConfigError(f"head_init must be one of {', '.join(HEAD_INITS)}, got {head_init!r}")
    if epochs < 1 or batch_size < 2:
        raise ConfigError("fine-tuning needs epochs >= 1 and batch_size >= 2")
    check_learning_rates(learning_rates)


def check_learning_rates(learning_rates: Sequence[float]) -> None:
    """Raise a clear error unless ``learning_rates`` is a non-empty grid of positive rates."""
    if not learning_rates or any(not lr > 0 for lr in learning_rates):
        raise ConfigError(f"--learning-rates must all be positive, got {list(learning_rates)}")


def grid_edge(chosen: float, learning_rates: Sequence[float]) -> str | None:
    """``largest`` or ``smallest`` when ``chosen`` is that end of a grid of several rates
    (the best may lie beyond it), else None."""
    if len(set(learning_rates)) < 2:
        return None
    if chosen == max(learning_rates):
        return "largest"
    return "smallest" if chosen == min(learning_rates) else None


def _choose_and_train(
    job: FineTuneRun, learning_rates: Sequence[float], epochs: int
) -> tuple[dict[float, list[float]], float, int, nn.Module]:
    """Every rate trained for ``epochs``, scored on the held-out images after each epoch;
    returns those curves, the chosen rate and epochs, and the model trained with them."""
    curves: dict[float, list[float]] = {}
    full_length: tuple[float, nn.Module] | None = None
    for lr in learning_rates:
        model, curves[lr] = job.train(lr, epochs, score_each_epoch="val")
        # The choice's order, on the last epochs alone: the whole run that may be chosen.
        if best_rate_and_epochs({rate: c[-1:] for rate, c in curves.items()})[0] == lr:
            full_length = (lr, model)
    best_lr, best_epoch = best_rate_and_epochs(curves)
    if full_length is not None and (best_lr, best_epoch) == (full_length[0], epochs):
        # Training it again would give the same weights (same seed, same cosine, and scoring
        # draws no random numbers): keep it.
        return curves, best_lr, best_epoch, full_length[1]
    model, _ = job.train(best_lr, best_epoch)
    return curves, best_lr, best_epoch, model


def best_rate_and_epochs(curves: dict[float, list[float]]) -> tuple[float, int]:
    """The (rate, epochs) of the best held-out top-1 in ``curves`` ({rate: per-epoch top-1});
    ties go to fewer epochs, then to the larger rate."""
    return max(
        ((lr, epoch) for lr, curve in curves.items() for epoch in range(1, len(curve) + 1)),
        key=lambda pair: (curves[pair[0]][pair[1] - 1], -pair[1], pair[0]),
    )


class FineTuneRun:
    """The data, augmentation and optimiser settings shared by every training of one call."""

    def __init__(self, encoder, feature_dim, images, labels, *, mean, std, size, batch_size,
                 weight_decay, crop, seed, device, head_init="random",
                 precision="fp32") -> None:  # fmt: skip
        self.encoder, self.feature_dim = encoder, feature_dim
        self.images, self.labels = images, {k: v.long() for k, v in labels.items()}
        self.num_classes = int(max(int(v.max()) for v in self.labels.values())) + 1
        self.mean, self.std = channel_stats(mean, std, images["train"].shape[1], device)
        self.size, self.batch_size, self.weight_decay = size, batch_size, weight_decay
        self.crop, self.seed, self.device = crop, seed, device
        self.precision = precision
        self.inference_batch = inference_batch_size(device)
        self._probe_head = self._fit_probe_head() if head_init == "linear-probe" else None

    def _autocast(self) -> torch.autocast:
        return autocast(self.precision, self.device)

    def _fit_probe_head(self) -> nn.Linear:
        """A linear head fitted on the frozen encoder's features of the labelled images (whole
        images, eval-mode BatchNorm): full-batch L-BFGS on the cross-entropy, a little L2."""
        encoder = copy.deepcopy(self.encoder).to(self.device, memory_format=torch.channels_last)
        x, y = self.images["train"], self.labels["train"].to(self.device)
        with torch.no_grad(), self._autocast():
            features = self._encode_whole(encoder, x, output_device=self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            head = nn.Linear(self.feature_dim, self.num_classes).to(self.device)
        optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=200,
                                      line_search_fn="strong_wolfe")  # fmt: skip

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(head(features), y) + 1e-4 * head.weight.square().sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        return head.cpu()

    def _augment(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = batch.to(self.device).float().div_(255.0)
        if self.crop == "resized":
            x = random_resized_crop_flip(x, self.size, (0.08, 1.0), generator)
        else:  # pad by an eighth of the side: CIFAR's 4 px at 32 px
            padding = max(1, round(x.shape[-1] / 8))
            x = prepare_whole_images(pad_crop_flip(x, padding, generator), self.size)
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def _encode_whole(self, model: nn.Module, images: torch.Tensor,
                      output_device: torch.device | None = None) -> torch.Tensor:  # fmt: skip
        """``model`` in eval mode on the whole ``images``, in inference-sized batches."""
        return encode(model, images,
                      lambda x: (prepare_whole_images(x, self.size) - self.mean) / self.std,
                      batch_size=self.inference_batch, device=self.device, channels_last=True,
                      output_device=output_device)  # fmt: skip

    def train(
        self, lr: float, epochs: int, score_each_epoch: str | None = None
    ) -> tuple[nn.Module, list[float]]:
        """A fresh copy of the encoder + head trained for ``epochs``; the top-1 on
        ``score_each_epoch`` after each epoch (empty without it)."""
        generator = torch.Generator().manual_seed(self.seed)
        if self._probe_head is not None:
            head = copy.deepcopy(self._probe_head)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                head = nn.Linear(self.feature_dim, self.num_classes)
        model = nn.Sequential(copy.deepcopy(self.encoder), nn.Flatten(1), head).to(self.device)
        # Channels-last as in byol train: the convnet-512 at 28 px infers 1.49x faster so on a
        # CPU (benchmarks/RESULTS.md, "Inference batches").
        model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                                    weight_decay=self.weight_decay)  # fmt: skip
        train_x, train_y = self.images["train"], self.labels["train"]
        n = len(train_x)
        steps_per_epoch = max(1, n // self.batch_size)
        total, step, curve = epochs * steps_per_epoch, 0, []
        for _ in range(epochs):
            model.train()
            order = torch.randperm(n, generator=generator)
            for start in range(0, steps_per_epoch * self.batch_size, self.batch_size):
                index = order[start : start + self.batch_size]
                if len(index) < 2:  # BatchNorm needs two samples
                    index = order[:2]
                for group in optimizer.param_groups:  # cosine to 0 over the run, per step
                    group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
                with self._autocast():
                    logits = model(self._augment(train_x[index], generator))
                loss = F.cross_entropy(logits.float(), train_y[index].to(self.device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
            if score_each_epoch is not None:
                curve.append(self.scores(model, score_each_epoch)["top1"])
        return model, curve

    @torch.no_grad()
    def scores(self, model: nn.Module, part: str) -> dict:
        x, y = self.images[part], self.labels[part]
        with self._autocast():
            logits = self._encode_whole(model, x)
        top5 = topk_accuracy(logits, y, 5) if self.num_classes >= 5 else None
        return {"top1": topk_accuracy(logits, y, 1), "top5": top5}
