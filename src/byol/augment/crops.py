"""Crops, flips and whole-image preparation: the geometry shared by training and evaluation.

* :func:`crop_boxes` turns uniform draws into random-resized-crop boxes: area fraction
  ``s ~ U(scale)`` of the image, aspect ratio ``r = exp(U(log ratio))``, width ``sqrt(s A r)``
  and height ``sqrt(s A / r)``, under one of two laws (:data:`CROP_LAWS`):

  - ``reference`` (the default; the official code's ``_decode_and_random_crop``): one (s, r)
    draw, width and height rounded to whole pixels and clamped to the image, the top-left
    corner uniform over the whole-pixel positions that keep the box inside. Clamping makes
    large crops of a non-square image a little smaller and squarer than drawn.
  - ``torchvision`` (``RandomResizedCrop``): up to ten (s, r) draws, the first whose box fits is
    kept (the uniform law restricted to boxes that fit), continuous (sub-pixel) boxes, the
    corner uniform over the positions inside; when no draw fits, the whole image with its
    aspect ratio clamped into ``ratio``.
* :class:`CropSampler` draws every view's box and flip for one image from (seed, epoch, index)
  alone: the data loader's workers crop full-resolution files with it, so a sample's crops do
  not depend on which worker decodes it, and a resumed run crops exactly as before.
* :func:`resample_boxes` crops every box, resizes it and flips the flagged ones in one
  ``F.grid_sample`` call (``align_corners=False``, border padding) over per-sample
  axis-aligned grids; the flip negates the grid's x scale. Bilinear sampling does not
  low-pass, so downscaling a large crop by more than 2x aliases.
* :func:`random_resized_crop_flip` is the two together, drawn from a generator (the augmented
  linear probe's training crops).
* :func:`pad_crop_flip` is the CIFAR-style crop: pad, take a random crop of the original size,
  flip half of the samples.
* :func:`prepare_whole_images` is how a whole image is shown to an encoder being evaluated,
  monitored, embedded or exported: a centre crop of ``crop_fraction`` of the shorter side,
  resized (bilinear, antialiased) to ``size`` x ``size``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "CROP_LAWS",
    "CROP_TRIES",
    "CropSampler",
    "crop_boxes",
    "pad_crop_flip",
    "prepare_whole_images",
    "random_resized_crop_flip",
    "resample_boxes",
]

CROP_TRIES = 10
#: The random-resized-crop laws (see the module docstring).
CROP_LAWS = ("reference", "torchvision")


def crop_boxes(
    u_scale: torch.Tensor,
    u_ratio: torch.Tensor,
    u_x: torch.Tensor,
    u_y: torch.Tensor,
    *,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    law: str = "torchvision",
) -> torch.Tensor:
    """Random-resized-crop boxes (B, 4) as (x0, y0, x1, y1) in input pixels.

    ``u_scale`` and ``u_ratio`` are (B, tries) uniform draws, ``u_x`` and ``u_y`` (B,); the
    ``reference`` law uses the first try only.
    """
    if law == "reference":
        return _reference_boxes(u_scale[:, 0], u_ratio[:, 0], u_x, u_y, height=height,
                                width=width, scale=scale, ratio=ratio)  # fmt: skip
    if law != "torchvision":
        raise ValueError(f"unknown crop law {law!r}; valid choices: {', '.join(CROP_LAWS)}")
    area = float(height * width)
    scales, ratios = _scales_and_ratios(u_scale, u_ratio, scale, ratio)
    widths = torch.sqrt(area * scales * ratios)
    heights = torch.sqrt(area * scales / ratios)
    fits = (widths <= width) & (heights <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # first fitting try (0 if none)
    found = fits.any(dim=1)
    # Central-crop fallback: the whole image with its aspect ratio clamped into ``ratio``.
    image_ratio = width / height
    if image_ratio < ratio[0]:
        fallback_w, fallback_h = float(width), width / ratio[0]
    elif image_ratio > ratio[1]:
        fallback_w, fallback_h = height * ratio[1], float(height)
    else:
        fallback_w, fallback_h = float(width), float(height)
    box_w = torch.where(found, widths.gather(1, first).squeeze(1), fallback_w)
    box_h = torch.where(found, heights.gather(1, first).squeeze(1), fallback_h)
    pos_x = torch.where(found, u_x, 0.5)
    pos_y = torch.where(found, u_y, 0.5)
    x0 = pos_x * (width - box_w)
    y0 = pos_y * (height - box_h)
    return torch.stack((x0, y0, x0 + box_w, y0 + box_h), dim=1)


def _scales_and_ratios(
    u_scale: torch.Tensor, u_ratio: torch.Tensor, scale: tuple[float, float],
    ratio: tuple[float, float],
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    scales = scale[0] + (scale[1] - scale[0]) * u_scale
    return scales, torch.exp(log_lo + (log_hi - log_lo) * u_ratio)


def _reference_boxes(
    u_scale: torch.Tensor, u_ratio: torch.Tensor, u_x: torch.Tensor, u_y: torch.Tensor, *,
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
) -> torch.Tensor:  # fmt: skip
    """One draw per sample, whole pixels, clamped to the image (the official code's law)."""
    scales, ratios = _scales_and_ratios(u_scale, u_ratio, scale, ratio)
    area = float(height * width)
    # Computed in float64 so that rounding agrees with the reference's float32 only at ties.
    target = area * scales.double()
    box_w = torch.sqrt(target * ratios.double()).round().clamp(1, width)
    box_h = torch.sqrt(target / ratios.double()).round().clamp(1, height)
    # Integer offsets uniform over 0 .. side - box (inclusive), as tf.random.uniform(int32).
    x0 = torch.floor(u_x.double() * (width - box_w + 1)).clamp(max=width - box_w)
    y0 = torch.floor(u_y.double() * (height - box_h + 1)).clamp(max=height - box_h)
    boxes = torch.stack((x0, y0, x0 + box_w, y0 + box_h), dim=1)
    return boxes.to(u_x.dtype if u_x.is_floating_point() else torch.float32)


@dataclass(frozen=True)
class CropSampler:
    """Each view's crop box and flip for one image, a function of (seed, epoch, index) alone.

    ``views`` holds, per view, ``(crop_scale, crop_ratio, flip_prob, crop_law)``; build it from
    :class:`~byol.augment.ViewConfig` objects with :meth:`from_views`. Picklable, so DataLoader
    workers can draw with it.

    Example::

        sampler = CropSampler.from_views(plan.views(), seed=0)
        [(box1, flip1), (box2, flip2)] = sampler.draw(epoch=3, index=17, height=375, width=500)
    """

    views: tuple[tuple[tuple[float, float], tuple[float, float], float, str], ...]
    seed: int

    @classmethod
    def from_views(cls, views: Sequence, seed: int) -> CropSampler:
        """A sampler for ``views`` (ViewConfig objects)."""
        return cls(
            tuple((tuple(v.crop_scale), tuple(v.crop_ratio), float(v.flip_prob), v.crop_law)
                  for v in views),
            int(seed),
        )  # fmt: skip

    def draw(
        self, epoch: int, index: int, height: int, width: int
    ) -> list[tuple[tuple[float, float, float, float], bool]]:
        """Per view, the box (x0, y0, x1, y1) on the ``height`` x ``width`` image and the flip."""
        rng = np.random.default_rng((self.seed, epoch, index))
        drawn = []
        for crop_scale, crop_ratio, flip_prob, law in self.views:
            u = rng.random(2 * CROP_TRIES + 3)
            box = _one_box(u, height, width, crop_scale, crop_ratio, law)
            drawn.append((box, bool(u[-1] < flip_prob)))
        return drawn


def _one_box(
    u: np.ndarray, height: int, width: int, scale: tuple[float, float],
    ratio: tuple[float, float], law: str,
) -> tuple[float, float, float, float]:  # fmt: skip
    """:func:`crop_boxes` for one sample in plain floats (the loader's workers call it per
    image, where a dozen tiny torch ops would cost more than the decode). ``u`` holds the
    (tries scale, tries ratio, x, y) uniforms in :func:`crop_boxes`'s layout."""
    area = float(height * width)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    u_x, u_y = float(u[2 * CROP_TRIES]), float(u[2 * CROP_TRIES + 1])
    tries = 1 if law == "reference" else CROP_TRIES
    for attempt in range(tries):
        s = scale[0] + (scale[1] - scale[0]) * float(np.float32(u[attempt]))
        r = math.exp(log_lo + (log_hi - log_lo) * float(np.float32(u[CROP_TRIES + attempt])))
        if law == "reference":
            box_w = min(max(round(math.sqrt(area * s * r)), 1), width)
            box_h = min(max(round(math.sqrt(area * s / r)), 1), height)
            x0 = min(math.floor(u_x * (width - box_w + 1)), width - box_w)
            y0 = min(math.floor(u_y * (height - box_h + 1)), height - box_h)
            return (float(x0), float(y0), float(x0 + box_w), float(y0 + box_h))
        box_w, box_h = math.sqrt(area * s * r), math.sqrt(area * s / r)
        if box_w <= width and box_h <= height:
            x0, y0 = u_x * (width - box_w), u_y * (height - box_h)
            return (x0, y0, x0 + box_w, y0 + box_h)
    image_ratio = width / height  # no try fits: torchvision's central fallback
    box_w, box_h = float(width), float(height)
    if image_ratio < ratio[0]:
        box_h = width / ratio[0]
    elif image_ratio > ratio[1]:
        box_w = height * ratio[1]
    x0, y0 = (width - box_w) / 2, (height - box_h) / 2
    return (x0, y0, x0 + box_w, y0 + box_h)


def resample_boxes(
    image: torch.Tensor,
    boxes: torch.Tensor,
    flip: torch.Tensor,
    size: tuple[int, int],
    mode: str = "bilinear",
) -> torch.Tensor:
    """Crop every box of ``boxes`` (B, 4), resize it to ``size`` and flip where ``flip``."""
    b, _, h, w = image.shape
    out_h, out_w = size
    dtype = image.dtype
    boxes = boxes.to(device=image.device, dtype=dtype)
    flip = flip.to(image.device)
    # Normalised coordinates (align_corners=False): -1 and 1 are the outer edges of the
    # image, so the box [x0, x1] maps to centre (x0 + x1) / w - 1 and half-width (x1 - x0) / w.
    centre_x = (boxes[:, 0] + boxes[:, 2]) / w - 1.0
    centre_y = (boxes[:, 1] + boxes[:, 3]) / h - 1.0
    half_x = (boxes[:, 2] - boxes[:, 0]) / w
    half_y = (boxes[:, 3] - boxes[:, 1]) / h
    half_x = torch.where(flip, -half_x, half_x)
    base_x = _pixel_centres(out_w, image.device, dtype)
    base_y = _pixel_centres(out_h, image.device, dtype)
    grid_x = torch.addcmul(centre_x[:, None], half_x[:, None], base_x[None, :])
    grid_y = torch.addcmul(centre_y[:, None], half_y[:, None], base_y[None, :])
    shape = (b, out_h, out_w)
    grid = torch.stack((grid_x[:, None, :].expand(shape), grid_y[:, :, None].expand(shape)), -1)
    return F.grid_sample(image, grid, mode=mode, padding_mode="border", align_corners=False)


def _pixel_centres(count: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The centres of ``count`` output pixels in [-1, 1] coordinates."""
    return torch.arange(count, device=device, dtype=dtype).mul_(2.0 / count).add_(1.0 / count - 1.0)


def random_resized_crop_flip(
    images: torch.Tensor,
    size: int,
    scale: tuple[float, float],
    generator: torch.Generator,
    *,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    law: str = "reference",
) -> torch.Tensor:
    """Per-sample random resized crop of area ``scale`` to (size, size) plus a random h-flip,
    drawn from ``generator`` (a CPU generator; the boxes move to the images' device)."""
    n, _, h, w = images.shape
    uniforms = torch.rand(n, 2 * CROP_TRIES + 3, generator=generator)
    boxes = crop_boxes(
        uniforms[:, :CROP_TRIES], uniforms[:, CROP_TRIES : 2 * CROP_TRIES],
        uniforms[:, 2 * CROP_TRIES], uniforms[:, 2 * CROP_TRIES + 1],
        height=h, width=w, scale=scale, ratio=ratio, law=law,
    )  # fmt: skip
    flip = uniforms[:, 2 * CROP_TRIES + 2] < 0.5
    return resample_boxes(images, boxes, flip, (size, size))


def pad_crop_flip(
    images: torch.Tensor,
    padding: int,
    generator: torch.Generator,
    *,
    padding_mode: str = "constant",
) -> torch.Tensor:
    """Per-sample random crop of the padded image back to its size, and a random h-flip.

    ``padding_mode`` is ``F.pad``'s: ``constant`` (zeros, as torchvision's ``RandomCrop``) or
    ``replicate``. Draws come from ``generator`` (CPU) and move to the images' device.
    """
    n, _, h, w = images.shape
    device = images.device
    padded = F.pad(images, (padding,) * 4, mode=padding_mode)
    shifts = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator).to(device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(device)
    rows = shifts[:, 0, None] + torch.arange(h, device=device)  # (n, h)
    cols = torch.arange(w, device=device).expand(n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + shifts[:, 1, None]  # (n, w)
    batch = torch.arange(n, device=device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (n, h, w, C)
    return out.permute(0, 3, 1, 2).contiguous()


def prepare_whole_images(
    images: torch.Tensor, size: int | tuple[int, int] | None, crop_fraction: float = 1.0
) -> torch.Tensor:
    """Float [0, 1] images as an encoder is shown them whole: the shorter side resized
    (bilinear, antialiased) to ``size / crop_fraction`` and the centre ``size`` cropped.

    ``size`` None keeps the images' own size (after the centre crop, if any). A square image at
    ``crop_fraction`` 1 is simply resized to ``size`` x ``size``.
    """
    h, w = images.shape[-2:]
    if size is None:
        out_h, out_w = round(h * crop_fraction), round(w * crop_fraction)
    else:
        out_h, out_w = (size, size) if isinstance(size, int) else size
    scale = max(out_h / h, out_w / w) / crop_fraction
    new_h, new_w = max(out_h, round(h * scale)), max(out_w, round(w * scale))
    if (new_h, new_w) != (h, w):
        images = F.interpolate(
            images, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True
        )
    if (new_h, new_w) != (out_h, out_w):
        top, left = (new_h - out_h) // 2, (new_w - out_w) // 2
        images = images[..., top : top + out_h, left : left + out_w]
    return images
