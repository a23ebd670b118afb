"""Linear evaluation with training-time augmentation, the paper's full protocol: the frozen
encoder runs on freshly augmented training images every epoch."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn

from ..augment.crops import pad_crop_flip, prepare_whole_images, random_resized_crop_flip
from ..errors import ConfigError, DataError
from ..runtime import inference_batch_size
from .checks import channel_stats, check_images, check_labels
from .features import default_device, encode
from .linear import (
    PAPER_LEARNING_RATES,
    check_probe_config,
    fit_and_select,
    probe_result,
    resolve_num_classes,
    standardizer,
)

__all__ = ["linear_probe_augmented"]


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
    encode_batch_size: int | None = None,
    channels_last: bool = False,
) -> dict:
    """Linear evaluation with training-time augmentation, the paper's full protocol.

    The encoder stays frozen in eval mode (BatchNorm running statistics); its mode is restored on
    return. Every epoch each training image gets a fresh per-sample augmentation (drawn from a
    generator seeded with ``seed``):

    * ``crop="resized"`` (default, as the paper): random resized crop of area ``crop_scale`` and
      aspect ratio in [3/4, 4/3] straight to ``size``, bilinear (no antialiasing), with the
      crop law of the training views (:func:`byol.augment.crops.random_resized_crop_flip`);
    * ``crop="pad"`` (the usual CIFAR choice): zero-pad by ``padding`` pixels, random crop back to
      the image size, then resize to ``size`` if it differs;

    followed by a horizontal flip with probability 0.5. Held-out and test images get a centre
    crop of ``test_crop_fraction`` of their shorter side (1.0, the default: the whole image),
    resized to ``size`` (:func:`byol.augment.crops.prepare_whole_images`).

    The learning rate is chosen as in :func:`linear_probe` (held-out part of the training set,
    scored un-augmented; selection and final classifiers trained on the same augmented batches,
    so the encoder runs ``epochs`` times over the training set, not twice that). With
    ``standardize``, the feature mean/std come from un-augmented training features.

    Returns:
        the same keys as :func:`linear_probe`, plus ``"crop"``.
    """
    started = time.perf_counter()
    rates = check_probe_config(learning_rates, epochs, batch_size, val_fraction)
    train_labels, test_labels = _check_inputs(
        train_images, train_labels, test_images, test_labels, crop=crop, crop_scale=crop_scale,
        padding=padding, test_crop_fraction=test_crop_fraction, size=size,
    )  # fmt: skip
    num_classes = resolve_num_classes(num_classes, train_labels)
    run_device = torch.device(device) if device else default_device(encoder, train_images.device)
    mean_t, std_t = channel_stats(mean, std, train_images.shape[1], run_device)
    if encode_batch_size is None:
        encode_batch_size = inference_batch_size(run_device)
    options = {"batch_size": encode_batch_size, "device": run_device,
               "channels_last": channels_last}  # fmt: skip

    def clean(x: torch.Tensor) -> torch.Tensor:
        return (prepare_whole_images(x, size, test_crop_fraction) - mean_t) / std_t

    aug_generator = torch.Generator().manual_seed(seed + 1)

    def augmented(x: torch.Tensor) -> torch.Tensor:
        if crop == "resized":
            x = random_resized_crop_flip(x, size, crop_scale, aug_generator)
        else:
            x = prepare_whole_images(pad_crop_flip(x, padding, aug_generator), size)
        return (x - mean_t) / std_t

    train_clean = encode(encoder, train_images, clean, **options).to(run_device)
    feat_mean, feat_std = standardizer(train_clean) if standardize else (0.0, 1.0)
    train_clean.sub_(feat_mean).div_(feat_std)  # a fresh tensor of ours
    labels_dev = train_labels.to(run_device)

    def batch_for(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = encode(encoder, train_images, augmented, indices=indices,
                       output_device=run_device, **options)  # fmt: skip
        return (feats - feat_mean) / feat_std, labels_dev[indices.to(run_device)]

    selection, final_heads = fit_and_select(
        train_labels, batch_for, lambda idx: train_clean[idx.to(run_device)],
        dim=train_clean.shape[1], rates=rates, num_classes=num_classes, epochs=epochs,
        batch_size=batch_size, val_fraction=val_fraction, seed=seed, device=run_device,
        fit_final=True,
    )  # fmt: skip
    chosen = selection["learning_rate"]
    classifier = final_heads.subset([rates.index(chosen)])
    test_x = encode(encoder, test_images, clean, **options).to(run_device)
    test_x.sub_(feat_mean).div_(feat_std)
    test = classifier.scores(test_x, test_labels.to(run_device))
    result = probe_result(
        test, selection, num_classes=num_classes, n_train=int(train_images.shape[0]),
        n_test=int(test_images.shape[0]), epochs=epochs, started=started,
    )  # fmt: skip
    return {**result, "crop": crop}


def _check_inputs(
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    crop: str,
    crop_scale: tuple[float, float],
    padding: int,
    test_crop_fraction: float,
    size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check the probe's inputs, naming the one at fault; returns the checked labels."""
    check_images(train_images, "train_images")
    check_images(test_images, "test_images")
    train_labels = check_labels(train_labels, "train")
    test_labels = check_labels(test_labels, "test")
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
    return train_labels, test_labels
