"""Per-sample photometric operations on batches of images, as the BYOL augmentations need them.

Every function takes a float batch ``x`` of shape ``(N, C, H, W)`` with values in [0, 1] and,
where it has a parameter, one value per sample (a tensor of shape ``(N,)``, or a Python number
used for every sample). Results are clipped to [0, 1], as the paper clips after each colour op.
The formulas are those of Table 6 of the paper and its official code (docs/method.md):

* brightness: additive shift, ``x + shift``;
* contrast: ``mean_c + factor * (x - mean_c)`` around each channel's spatial mean;
* saturation: HSV saturation times ``factor`` (clipped to [0, 1]), hue and value unchanged;
* hue: HSV hue plus ``shift``, modulo 1;
* grayscale: luma ``0.2989 R + 0.5870 G + 0.1140 B``;
* solarisation: ``x if x < 0.5 else 1 - x``;
* Gaussian blur: separable, normalised kernel ``exp(-t^2 / (2 sigma^2))``, zero padding (the
  official code's ``SAME`` convolution, which darkens a border of half the kernel a little).

Saturation and hue act on RGB images (C = 3) only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "LUMA_WEIGHTS",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "blur_kernel_size",
    "gaussian_blur",
    "gaussian_kernel1d",
    "hsv_to_rgb",
    "rgb_to_hsv",
    "solarize",
    "to_grayscale",
]

LUMA_WEIGHTS = (0.2989, 0.5870, 0.1140)

# Offsets n of the closed-form HSV -> RGB map c_n = V - C * clamp(min(k, 4 - k), 0, 1) with
# k = (n + 6 H) mod 6, for R, G and B; it needs no branch on the hue sector.
_HSV_OFFSETS = (5.0, 3.0, 1.0)


def _per_sample(value: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor | float:
    """Shape a per-sample parameter ``(N,)`` so that it broadcasts against ``(N, C, H, W)``."""
    if isinstance(value, torch.Tensor):
        return value.to(device=x.device, dtype=x.dtype).reshape(-1, 1, 1, 1)
    return float(value)


def _require_rgb(x: torch.Tensor, op: str) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{op} needs an RGB batch of shape (N, 3, H, W), got {tuple(x.shape)}")


def adjust_brightness(x: torch.Tensor, shift: torch.Tensor | float) -> torch.Tensor:
    """Add ``shift`` (per sample) to every pixel and channel, then clip to [0, 1]."""
    return (x + _per_sample(shift, x)).clamp_(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """Scale each channel's deviation from its own spatial mean by ``factor``; clip to [0, 1]."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    # x + (f - 1)(x - m) rather than m + f(x - m): a factor of exactly 1 returns x bit for bit.
    scale = _per_sample(factor, x) - 1.0
    return torch.addcmul(x, x - mean, torch.as_tensor(scale, dtype=x.dtype)).clamp_(0.0, 1.0)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """Multiply the HSV saturation by ``factor`` (per sample), clipped to [0, 1].

    Computed without leaving RGB: for a fixed hue and value V = max(R, G, B), every channel is
    affine in the chroma C = V S, c = V - C k_c(hue), so the new chroma C' = min(f C, V) (the
    clip S' <= 1) gives c' = V - (V - c) C' / C. This is the HSV formula exactly (tested against
    a float64 HSV round trip), at a fraction of the cost of converting to HSV and back.
    """
    _require_rgb(x, "adjust_saturation")
    value = x.amax(dim=1, keepdim=True)
    chroma = value - x.amin(dim=1, keepdim=True)
    new_chroma = value - (value - chroma * _per_sample(factor, x)).clamp_(min=0.0)
    # Grey pixels (C = 0) have c == V whatever the gain; the clamp avoids 0 / 0.
    gain_minus_one = new_chroma.div_(chroma.clamp_(min=1e-12)).sub_(1.0)
    return torch.addcmul(x, x - value, gain_minus_one).clamp_(0.0, 1.0)


# The HSV helpers below use only arithmetic, floor, abs, clamp and channel max / min: on the
# CPU builds we measured, torch.where, torch.minimum and torch.remainder are 10-50x slower per
# element than those, and hue is the costliest colour op.


def _hue_value_chroma(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hue (in turns, not yet reduced mod 1), value and chroma of an RGB batch, each (N, H, W)."""
    red, green, blue = x.unbind(dim=1)
    value = x.amax(dim=1)
    chroma = value - x.amin(dim=1)
    # Hue sector by which channel holds the maximum; ties resolve red, then green, then blue.
    # sign(V - c) is 1 where channel c is below the maximum, 0 where it is the maximum.
    below_red = torch.sign(value - red)
    below_green = torch.sign(value - green)
    is_blue = below_red * below_green
    is_green = below_red - is_blue
    # In sixths of a turn: red max (g - b) / C, green max 2 + (b - r) / C, blue max 4 + (r - g) / C,
    # written as the red-branch numerator plus masked differences to the other two.
    to_green = (blue * 2.0).sub_(red).sub_(green).add_(chroma, alpha=2.0)  # (b-r+2C) - (g-b)
    to_blue = (red + blue).sub_(green, alpha=2.0).add_(chroma, alpha=4.0)  # (r-g+4C) - (g-b)
    sixths = (green - blue).addcmul_(is_green, to_green).addcmul_(is_blue, to_blue)
    # Grey pixels (C = 0) have a zero numerator (all channels equal, red branch): hue 0.
    turns = sixths.div_(chroma.mul(6.0).clamp_(min=1e-12))
    return turns, value, chroma


def _wrap(turns: torch.Tensor) -> torch.Tensor:
    """Reduce to [0, 1) in place."""
    return turns.sub_(torch.floor(turns))


def _rgb_from_hue(
    hue: torch.Tensor, value: torch.Tensor, chroma: torch.Tensor, shift: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """RGB ``(N, 3, H, W)`` from hue + shift (turns, any real), value and chroma (= V S).

    ``hue``, ``value``, ``chroma`` have shape (N, H, W); ``shift`` is a float or (N,) tensor.
    Channel n (n = 5, 3, 1 for R, G, B) is c_n = V - C clamp(min(k, 4 - k), 0, 1) with
    k = (n + 6 H) mod 6; min(k, 4 - k) = 2 - |k - 2| = 2 - 6 |frac(H + n / 6) - 1/3|.
    """
    offsets = torch.tensor(_HSV_OFFSETS, dtype=hue.dtype, device=hue.device).div_(6.0)
    if isinstance(shift, torch.Tensor):
        offsets = offsets + shift.to(device=hue.device, dtype=hue.dtype).view(-1, 1)
    else:
        offsets = offsets + float(shift)
    turns = _wrap(hue.unsqueeze(1) + offsets.view(-1, 3, 1, 1))
    ramp = turns.sub_(1.0 / 3.0).abs_().mul_(-6.0).add_(2.0).clamp_(0.0, 1.0)
    return torch.addcmul(value.unsqueeze(1), chroma.unsqueeze(1), ramp, value=-1.0)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """Convert an RGB batch ``(N, 3, H, W)`` in [0, 1] to HSV, every component in [0, 1].

    Hue is 0 where the pixel is grey (chroma 0), saturation is 0 where it is black.
    """
    _require_rgb(x, "rgb_to_hsv")
    turns, value, chroma = _hue_value_chroma(x)
    # Black pixels have chroma 0 as well, so the clamp only avoids 0 / 0.
    saturation = chroma / value.clamp(min=1e-12)
    return torch.stack((_wrap(turns), saturation, value), dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Convert an HSV batch ``(N, 3, H, W)`` (all components in [0, 1]) to RGB in [0, 1]."""
    _require_rgb(x, "hsv_to_rgb")
    hue, saturation, value = x.unbind(dim=1)
    return _rgb_from_hue(hue, value, value * saturation).clamp_(0.0, 1.0)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor | float) -> torch.Tensor:
    """Rotate the HSV hue by ``shift`` (per sample, in turns), modulo 1; S and V unchanged.

    Same as ``hsv_to_rgb`` of the shifted ``rgb_to_hsv``, fused: saturation never needs to be
    formed since V * S is the chroma max - min.
    """
    _require_rgb(x, "adjust_hue")
    turns, value, chroma = _hue_value_chroma(x)
    return _rgb_from_hue(turns, value, chroma, shift).clamp_(0.0, 1.0)


def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma ``0.2989 R + 0.5870 G + 0.1140 B`` replicated to 3 channels (an expanded view)."""
    _require_rgb(x, "to_grayscale")
    red, green, blue = x.unbind(dim=1)
    luma = red * LUMA_WEIGHTS[0] + green * LUMA_WEIGHTS[1] + blue * LUMA_WEIGHTS[2]
    return luma.unsqueeze(1).expand_as(x)


def solarize(x: torch.Tensor) -> torch.Tensor:
    """Invert the pixels at or above 0.5: ``x if x < 0.5 else 1 - x``.

    Written ``0.5 - |x - 0.5|``, which is that function (up to float rounding) without a mask.
    """
    return (x - 0.5).abs_().neg_().add_(0.5)


def blur_kernel_size(side: int) -> int:
    """Kernel size for an image side: side/10 truncated, made odd (23 at 224), at least 3.

    The official code takes ``int(0.1 * side)`` and blurs with radius ``k // 2``, i.e. size
    ``2 * (k // 2) + 1``; we do the same and keep a 3-tap minimum for tiny images.
    """
    return max(3, 2 * (int(side // 10) // 2) + 1)


def gaussian_kernel1d(sigma: torch.Tensor | float, size: int) -> torch.Tensor:
    """Normalised 1-D Gaussian kernels, one per sigma: ``(N, size)``; ``(size,)`` for a scalar.

    ``size`` must be odd; tap ``t`` (centred, ``-size//2 .. size//2``) has weight
    ``exp(-t^2 / (2 sigma^2))`` before the weights are divided by their sum.
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"Gaussian kernel size must be odd and positive, got {size}")
    scalar = not isinstance(sigma, torch.Tensor) or sigma.dim() == 0
    sigma_t = torch.as_tensor(sigma).reshape(-1, 1)
    if not sigma_t.is_floating_point():
        sigma_t = sigma_t.to(torch.get_default_dtype())
    radius = size // 2
    taps = torch.arange(-radius, radius + 1, dtype=sigma_t.dtype, device=sigma_t.device)
    weights = torch.exp(-(taps * taps) / (2.0 * sigma_t * sigma_t))
    weights = weights / weights.sum(dim=1, keepdim=True)
    return weights[0] if scalar else weights


def gaussian_blur(
    x: torch.Tensor, sigma: torch.Tensor | float, kernel_size: int | tuple[int, int]
) -> torch.Tensor:
    """Blur each sample with its own sigma: separable, zero padding, odd ``kernel_size``.

    ``kernel_size`` is one odd size or ``(size_h, size_w)``. Each pass is a sum of shifted
    slices of the padded batch weighted by per-sample taps; on the CPU this is several times
    faster than a grouped convolution with one group per sample and channel.
    """
    n, _, h, w = x.shape
    size_h, size_w = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    if not isinstance(sigma, torch.Tensor):
        sigma = torch.full((n,), float(sigma))
    sigma = sigma.to(device=x.device, dtype=x.dtype)
    pad_h, pad_w = size_h // 2, size_w // 2
    # Zeros, as the reference's depthwise convolution with padding="SAME".
    padded = F.pad(x, (pad_w, pad_w, pad_h, pad_h))
    # Padding both axes first and blurring with "valid" sums equals padding per pass: the
    # vertical pass maps zero columns to zero columns.
    taps_h = gaussian_kernel1d(sigma, size_h).view(n, 1, 1, 1, size_h).unbind(-1)
    taps_w = gaussian_kernel1d(sigma, size_w).view(n, 1, 1, 1, size_w).unbind(-1)
    rows = padded[:, :, 0:h, :] * taps_h[0]
    for i in range(1, size_h):
        rows.addcmul_(padded[:, :, i : i + h, :], taps_h[i])
    out = rows[..., 0:w] * taps_w[0]
    for i in range(1, size_w):
        out.addcmul_(rows[..., i : i + w], taps_w[i])
    return out
