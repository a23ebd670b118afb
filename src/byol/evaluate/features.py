"""Frozen-encoder features of whole images, and the raw-pixel baseline.

Images are shown to the encoder as :func:`byol.augment.crops.prepare_whole_images` prepares
them (a centre crop of the shorter side, resized), scaled to [0, 1] and normalised per channel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..augment.crops import prepare_whole_images
from ..errors import ConfigError
from ..runtime import inference_batch_size
from .checks import channel_stats, check_images

__all__ = ["default_device", "encode", "extract_features", "pixel_features", "to_unit_float"]


def to_unit_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; float input is taken to be in [0, 1] already."""
    if batch.dtype == torch.uint8:
        return batch.float().div_(255.0)
    return batch.float()


def default_device(encoder: nn.Module, fallback: torch.device | str = "cpu") -> torch.device:
    """Where ``encoder``'s weights are (``fallback`` for a module without any)."""
    for tensor in (*encoder.parameters(), *encoder.buffers()):
        return tensor.device
    return torch.device(fallback)


@torch.no_grad()
def encode(
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
            x = preprocess(to_unit_float(batch.to(device, non_blocking=True)))
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
    batch_size: int | None = None,
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
        size: when given, images are resized to (size, size): the shorter side to ``size``
            (bilinear, antialiased), then the centre cropped (no change for square images).
        batch_size: images per forward pass; default
            :func:`~byol.runtime.inference_batch_size` (128 on a CPU, 512 on a GPU).
        device: where the encoder runs; default: the device of its parameters.
        channels_last: feed the encoder channels-last tensors (faster for convnets whose weights
            are channels-last too, on GPUs and CPUs: benchmarks/RESULTS.md, "Inference batches").

    Returns:
        float32 (N, D) tensor on the CPU.
    """
    check_images(images, "images")
    run_device = torch.device(device) if device else default_device(encoder, images.device)
    mean_t, std_t = channel_stats(mean, std, images.shape[1], run_device)

    def preprocess(x: torch.Tensor) -> torch.Tensor:
        return (prepare_whole_images(x, size) - mean_t) / std_t

    return encode(
        encoder,
        images,
        preprocess,
        batch_size=inference_batch_size(run_device) if batch_size is None else batch_size,
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
    check_images(images, "images")
    mean_t, std_t = channel_stats(mean, std, images.shape[1], torch.device("cpu"))
    n = images.shape[0]
    out = torch.empty(n, images[0].numel(), dtype=torch.float32)
    # Converted in batches so a uint8 dataset never has a second full float copy besides `out`.
    for start in range(0, n, batch_size):
        batch = to_unit_float(images[start : start + batch_size].cpu())
        out[start : start + batch.shape[0]] = ((batch - mean_t) / std_t).flatten(1)
    return out
