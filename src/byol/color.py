"""Per-sample photometric operations on batches of images, as the BYOL augmentations need them.

Every function takes a float batch ``x`` of shape ``(N, C, H, W)`` with values in [0, 1] and,
where it has a parameter, one value per sample (a tensor of shape ``(N,)``, or a Python number
used for every sample). Results are clipped to [0, 1], as the paper clips after each colour op.
The formulas are those of ``shared/reference/byol-method.md`` (Table 6 of the paper):

* brightness: additive shift, ``x + shift``;
* contrast: ``mean_c + factor * (x - mean_c)`` around each channel's spatial mean;
* saturation: HSV saturation times ``factor`` (clipped to [0, 1]), hue and value unchanged;
* hue: HSV hue plus ``shift``, modulo 1;
* grayscale: luma ``0.2989 R + 0.5870 G + 0.1140 B``;
* solarisation: ``x if x < 0.5 else 1 - x``;
* Gaussian blur: separable, normalised kernel ``exp(-t^2 / (2 sigma^2))``, reflect padding.

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
    affine in the saturation S, c = V - V S k_c(hue), so scaling S by g gives
    c' = V - g (V - c). With the clip S' = min(S f, 1), g = min(f, 1 / S) = min(f, V / chroma).
    This is the HSV formula exactly (tested against a float64 HSV round trip), at a fraction of
    the cost of converting to HSV and back.
    """
    _require_rgb(x, "adjust_saturation")
    value = x.amax(dim=1, keepdim=True)
    chroma = value - x.amin(dim=1, keepdim=True)
    factor_t = torch.as_tensor(_per_sample(factor, x), dtype=x.dtype, device=x.device)
    # Grey pixels (chroma 0) have c == V, so any finite gain leaves them unchanged; the clamp
    # keeps V / chroma finite instead of 0 / 0.
    gain = torch.minimum(factor_t, value / chroma.clamp_min(1e-12))
    return torch.addcmul(x, x - value, gain - 1.0).clamp_(0.0, 1.0)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """Convert an RGB batch ``(N, 3, H, W)`` in [0, 1] to HSV, every component in [0, 1].

    Hue is 0 where the pixel is grey (chroma 0), saturation is 0 where it is black.
    """
    _require_rgb(x, "rgb_to_hsv")
    value, _ = x.max(dim=1)
    chroma = value - x.amin(dim=1)
    hue = _hue_from_rgb(x, value, chroma)
    saturation = torch.where(value > 0, chroma / value.clamp_min(1e-12), torch.zeros_like(value))
    return torch.stack((hue, saturation, value), dim=1)


def _hue_from_rgb(x: torch.Tensor, value: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
    """Hue in [0, 1) of ``x`` given its per-pixel max ``value`` and ``chroma`` (shape (N, H, W))."""
    red, green, blue = x.unbind(dim=1)
    safe_chroma = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    # Sector by which channel holds the maximum; ties resolve red, then green, then blue.
    hue = torch.where(
        red == value,
        (green - blue) / safe_chroma,
        torch.where(
            green == value,
            2.0 + (blue - red) / safe_chroma,
            4.0 + (red - green) / safe_chroma,
        ),
    )
    hue = torch.remainder(hue / 6.0, 1.0)
    return torch.where(chroma > 0, hue, torch.zeros_like(hue))


def _rgb_from_hue(hue: torch.Tensor, value: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
    """RGB ``(N, 3, H, W)`` from hue, value and chroma (= V * S), each of shape (N, H, W)."""
    offsets = torch.tensor(_HSV_OFFSETS, dtype=hue.dtype, device=hue.device).view(1, 3, 1, 1)
    k = torch.remainder(offsets + 6.0 * hue.unsqueeze(1), 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return value.unsqueeze(1) - chroma.unsqueeze(1) * ramp


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
    value = x.amax(dim=1)
    chroma = value - x.amin(dim=1)
    hue = _hue_from_rgb(x, value, chroma)
    if isinstance(shift, torch.Tensor):
        hue = hue + shift.to(device=x.device, dtype=x.dtype).view(-1, 1, 1)
    else:
        hue = hue + float(shift)
    return _rgb_from_hue(hue, value, chroma).clamp_(0.0, 1.0)


def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma ``0.2989 R + 0.5870 G + 0.1140 B`` replicated to 3 channels (an expanded view)."""
    _require_rgb(x, "to_grayscale")
    red, green, blue = x.unbind(dim=1)
    luma = red * LUMA_WEIGHTS[0] + green * LUMA_WEIGHTS[1] + blue * LUMA_WEIGHTS[2]
    return luma.unsqueeze(1).expand_as(x)


def solarize(x: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Invert the pixels at or above ``threshold``: ``x if x < threshold else 1 - x``."""
    return torch.where(x < threshold, x, 1.0 - x)


def blur_kernel_size(side: int) -> int:
    """Kernel size for an image side: side/10 truncated, made odd (23 at 224), at least 3.

    The official code takes ``int(0.1 * side)`` and blurs with radius ``k // 2``, i.e. size
    ``2 * (k // 2) + 1``; we do the same and keep a 3-tap minimum for tiny images.
    """
    return max(3, 2 * (int(side // 10) // 2) + 1)


def gaussian_kernel1d(sigma: torch.Tensor | float, size: int) -> torch.Tensor:
    """Normalised 1-D Gaussian kernels, one per sigma: shape ``(N, size)`` (``(size,)`` for a float).

    ``size`` must be odd; tap ``t`` (centred, ``-size//2 .. size//2``) has weight
    ``exp(-t^2 / (2 sigma^2))`` before the weights are divided by their sum.
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"Gaussian kernel size must be odd and positive, got {size}")
    scalar = not isinstance(sigma, torch.Tensor)
    sigma_t = torch.as_tensor(sigma, dtype=torch.get_default_dtype()).reshape(-1, 1)
    if not sigma_t.is_floating_point():
        sigma_t = sigma_t.float()
    radius = size // 2
    taps = torch.arange(-radius, radius + 1, dtype=sigma_t.dtype, device=sigma_t.device)
    weights = torch.exp(-(taps * taps) / (2.0 * sigma_t * sigma_t))
    weights = weights / weights.sum(dim=1, keepdim=True)
    return weights[0] if scalar else weights


def gaussian_blur(
    x: torch.Tensor, sigma: torch.Tensor | float, kernel_size: int | tuple[int, int]
) -> torch.Tensor:
    """Blur each sample with its own sigma: separable, reflect padding, odd ``kernel_size``.

    ``kernel_size`` is one odd size or ``(size_h, size_w)``. Both passes run as one grouped
    convolution each over the whole batch (one group per sample and channel).
    """
    n, c, h, w = x.shape
    size_h, size_w = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    if not isinstance(sigma, torch.Tensor):
        sigma = torch.full((n,), float(sigma))
    sigma = sigma.to(device=x.device, dtype=x.dtype)
    pad_h, pad_w = size_h // 2, size_w // 2
    # Reflect padding needs pad < side; tiny images fall back to replicating the edge.
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    padded = F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode=mode).reshape(1, n * c, h + 2 * pad_h, -1)
    # Padding both axes first and blurring with valid convolutions equals padding per pass:
    # the vertical pass maps reflected columns to reflected blurred columns.
    kernel_h = gaussian_kernel1d(sigma, size_h).repeat_interleave(c, dim=0)
    kernel_w = gaussian_kernel1d(sigma, size_w).repeat_interleave(c, dim=0)
    out = F.conv2d(padded, kernel_h.view(n * c, 1, size_h, 1), groups=n * c)
    out = F.conv2d(out, kernel_w.view(n * c, 1, 1, size_w), groups=n * c)
    return out.view(n, c, h, w)
