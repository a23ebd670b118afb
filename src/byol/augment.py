"""BYOL's two view augmentation pipelines, drawn per sample and run as batched tensor ops.

Order per view (``shared/reference/byol-method.md``, paper Table 6): random resized crop →
horizontal flip → colour jitter (brightness, contrast, saturation, hue in a random order per
sample, clipped after each) → grayscale → Gaussian blur → solarisation → clip to [0, 1] →
per-channel normalisation. Every sample draws its own parameters; the batch stays on its device.

How each step is computed:

* **Crop, resize and flip** are one ``F.grid_sample`` call (bilinear by default,
  ``align_corners=False``, border padding) over per-sample axis-aligned grids; the flip negates
  the grid's x scale. Crop boxes are continuous (not rounded to pixels): area fraction
  ``s ~ U(crop_scale)`` of the image, aspect ratio ``r = exp(U(log crop_ratio))``, width
  ``sqrt(s A r)`` and height ``sqrt(s A / r)``. As in torchvision, up to 10 (s, r) pairs are drawn
  per sample and the first one whose box fits inside the image is kept (so the law is the uniform
  one restricted to boxes that fit); the box's top-left corner is then uniform over the positions
  that keep it inside. A sample whose 10 tries all fail takes a central crop: the whole image,
  with its aspect ratio clamped into ``crop_ratio``. Boxes never leave the image; border padding
  only matters for the half pixel at the box edges. Bilinear sampling does not low-pass, so
  downscaling a large crop by more than 2× aliases (the paper's 224-pixel crops of ImageNet
  photos mostly downscale little).
* **Colour jitter** loops over the 4 positions of the order; at each, every op runs only on the
  samples that have it at that position (``index_select`` + ``index_copy_``). Each jittered sample
  is thus processed once per op, about 4× less arithmetic than computing all four candidates
  at every position and selecting, at the cost of 16 small gathers/scatters. Saturation is
  computed in RGB with an identity exactly equal to scaling HSV saturation (see
  :func:`byol.color.adjust_saturation`); hue goes through our batched RGB ↔ HSV conversion.
* **Grayscale, blur, solarisation** act on the selected subset only; ops whose probability
  (or strength) is 0 are skipped entirely. The blur kernel size is ``side // 10`` made odd
  (23 at 224, 9 at 96, at least 3) from the *output* size; sigma ~ U(blur_sigma).
* **Single-channel images** (C = 1): brightness and contrast apply; saturation, hue and grayscale
  have no meaning and are skipped (the drawn factors are still reported, ``grayscale`` is False).

Randomness: each view draws one ``(B, 36)`` block of uniforms from the given generator (on the
generator's device; on the batch's device with the default generator when ``generator`` is
None), so a seed fixes the views whatever the probabilities, and a CPU generator drives a CUDA
batch (parameters are computed on the CPU, then moved).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F

from .color import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    blur_kernel_size,
    gaussian_blur,
    gaussian_kernel1d,
    hsv_to_rgb,
    rgb_to_hsv,
    solarize,
    to_grayscale,
)
from .errors import ConfigError, DataError

__all__ = [
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "JITTER_OPS",
    "PRESETS",
    "BYOLAugment",
    "ViewConfig",
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

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Default for single-channel input: the Fashion-MNIST training-set statistics.
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)

#: Op index used in ``params["jitter_order"]`` and the columns of ``params["jitter_factors"]``.
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")

_CROP_TRIES = 10
# Columns of the per-view block of uniforms; fixed so that a seed fixes every draw.
_U_SCALE = slice(0, _CROP_TRIES)
_U_RATIO = slice(_CROP_TRIES, 2 * _CROP_TRIES)
_U_POS_X, _U_POS_Y, _U_FLIP, _U_JITTER = 20, 21, 22, 23
_U_FACTORS = slice(24, 28)
_U_ORDER = slice(28, 32)
_U_GRAY, _U_BLUR, _U_SIGMA, _U_SOLARIZE = 32, 33, 34, 35
_N_UNIFORMS = 36

_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class ViewConfig:
    """Probabilities and strengths of one view's augmentations (defaults: the paper's T)."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_prob: float = 0.2
    blur_prob: float = 1.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_prob: float = 0.0

    def __post_init__(self) -> None:
        for name in ("flip_prob", "jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"ViewConfig.{name} must be a probability in [0, 1], got {value}")
        for name in ("brightness", "contrast", "saturation"):
            value = getattr(self, name)
            if value < 0:
                raise ConfigError(f"ViewConfig.{name} must be >= 0, got {value}")
        if not 0.0 <= self.hue <= 0.5:
            raise ConfigError(f"ViewConfig.hue must be in [0, 0.5], got {self.hue}")
        for name, low_ok in (("crop_scale", 0.0), ("crop_ratio", 0.0), ("blur_sigma", 0.0)):
            pair = tuple(getattr(self, name))
            if len(pair) != 2 or not low_ok < pair[0] <= pair[1]:
                raise ConfigError(
                    f"ViewConfig.{name} must be a pair (low, high) with 0 < low <= high, got {pair}"
                )
            object.__setattr__(self, name, (float(pair[0]), float(pair[1])))
        if self.crop_scale[1] > 1.0:
            raise ConfigError(f"ViewConfig.crop_scale must lie in (0, 1], got {self.crop_scale}")


_VIEW1 = ViewConfig(blur_prob=1.0, solarize_prob=0.0)
_VIEW2 = ViewConfig(blur_prob=0.1, solarize_prob=0.2)
_CIFAR1 = replace(_VIEW1, blur_prob=0.0)
_CIFAR2 = replace(_VIEW2, blur_prob=0.0)

#: Named (view 1, view 2) configurations. ``imagenet`` is the paper's T / T'; ``cifar`` drops
#: the blur, as CIFAR-scale reproductions do; ``fashion-mnist`` is ``cifar`` with crops of at
#: least a quarter of the image (tuned, see docs/presets.md).
PRESETS: dict[str, tuple[ViewConfig, ViewConfig]] = {
    "imagenet": (_VIEW1, _VIEW2),
    "cifar": (_CIFAR1, _CIFAR2),
    # 28 px images: crops below a quarter of the image lose the garment (docs/presets.md).
    "fashion-mnist": (
        replace(_CIFAR1, crop_scale=(0.25, 1.0)),
        replace(_CIFAR2, crop_scale=(0.25, 1.0)),
    ),
}


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(pair) != 2 or min(pair) < 1:
        raise ConfigError(
            f"augmentation size must be a positive int or (height, width), got {size}"
        )
    return pair  # type: ignore[return-value]


class BYOLAugment:
    """Draw two differently augmented views of every image of a batch.

    Args:
        preset_or_configs: a name in :data:`PRESETS` or a pair ``(ViewConfig, ViewConfig)``.
        size: output side, or ``(height, width)``.
        mean, std: per-channel normalisation. Default: ImageNet statistics for 3 channels and
            Fashion-MNIST's ``(0.2860,) / (0.3530,)`` for 1 channel.
        interpolation: ``"bilinear"`` (default), ``"bicubic"`` or ``"nearest"`` for the crop.
        out_dtype: dtype of the returned views (float32 by default; e.g. bfloat16 to halve
            host-to-device traffic).

    Call it as ``view1, view2 = aug(batch, generator=g)`` with a ``(B, C, H, W)`` uint8 batch
    (divided by 255) or float batch in [0, 1], C in {1, 3}, on any device.
    """

    def __init__(
        self,
        preset_or_configs: str | tuple[ViewConfig, ViewConfig],
        size: int | Sequence[int],
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear",
        out_dtype: torch.dtype = torch.float32,
    ) -> None:
        if isinstance(preset_or_configs, str):
            if preset_or_configs not in PRESETS:
                raise ConfigError(
                    f"unknown augmentation preset {preset_or_configs!r}; "
                    f"valid choices: {', '.join(sorted(PRESETS))}"
                )
            configs = PRESETS[preset_or_configs]
        else:
            configs = tuple(preset_or_configs)
            if len(configs) != 2 or not all(isinstance(c, ViewConfig) for c in configs):
                raise ConfigError(
                    "augmentation configs must be a preset name or a pair of ViewConfig, "
                    f"got {preset_or_configs!r}"
                )
        self.configs: tuple[ViewConfig, ViewConfig] = (configs[0], configs[1])
        self.size = _pair(size)
        if interpolation not in _INTERPOLATIONS:
            valid = ", ".join(_INTERPOLATIONS)
            raise ConfigError(f"unknown interpolation {interpolation!r}; valid choices: {valid}")
        self.interpolation = interpolation
        if (mean is None) != (std is None):
            raise ConfigError("give both mean and std for the normalisation, or neither")
        self.mean = None if mean is None else tuple(float(m) for m in mean)
        self.std = None if std is None else tuple(float(s) for s in std)
        if self.mean is not None and self.std is not None:
            if len(self.mean) != len(self.std) or len(self.mean) not in (1, 3):
                raise ConfigError(
                    f"mean {self.mean} and std {self.std} need one value per channel (1 or 3)"
                )
            if min(self.std) <= 0:
                raise ConfigError(f"std values must be positive, got {self.std}")
        if not out_dtype.is_floating_point:
            raise ConfigError(f"out_dtype must be a floating dtype, got {out_dtype}")
        self.out_dtype = out_dtype
        self._stats_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def __repr__(self) -> str:
        return (
            f"BYOLAugment(configs={self.configs}, size={self.size}, mean={self.mean}, "
            f"std={self.std}, interpolation={self.interpolation!r}, out_dtype={self.out_dtype})"
        )

    # ---------------------------------------------------------------- public entry points

    def __call__(
        self,
        batch: torch.Tensor,
        generator: torch.Generator | None = None,
        return_params: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """Return ``(view1, view2)``, or ``(view1, view2, params1, params2)`` with return_params.

        Params are dicts of per-sample tensors (on the generator's device): ``crop`` (B×4 boxes
        x0, y0, x1, y1 in input pixels), ``flip``, ``jitter`` (applied), ``jitter_factors`` (B×4:
        brightness shift, contrast factor, saturation factor, hue shift, as drawn),
        ``jitter_order`` (B×4: op index, see :data:`JITTER_OPS`, at each position),
        ``grayscale`` (applied), ``blur_sigma`` (0 where not blurred) and ``solarize``.
        """
        image = self._to_float(batch)
        view1, params1 = self._view(image, self.configs[0], generator)
        view2, params2 = self._view(image, self.configs[1], generator)
        if return_params:
            return view1, view2, params1, params2
        return view1, view2

    def view(
        self,
        batch: torch.Tensor,
        config: ViewConfig,
        generator: torch.Generator | None = None,
        return_params: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One augmented view of ``batch`` under ``config`` (plus its params if asked)."""
        out, params = self._view(self._to_float(batch), config, generator)
        return (out, params) if return_params else out

    def eval_view(self, batch: torch.Tensor) -> torch.Tensor:
        """Deterministic view for evaluation: resize + centre crop to ``size``, then normalise.

        The shorter side is resized (bilinear, antialiased) so the image covers ``size``, and the
        centre is cropped; an image already of that size is only normalised.
        """
        image = self._to_float(batch)
        out_h, out_w = self.size
        h, w = image.shape[-2:]
        if (h, w) != (out_h, out_w):
            scale = max(out_h / h, out_w / w)
            new_h, new_w = max(out_h, round(h * scale)), max(out_w, round(w * scale))
            image = F.interpolate(
                image, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True
            ).clamp_(0.0, 1.0)
            top, left = (new_h - out_h) // 2, (new_w - out_w) // 2
            image = image[..., top : top + out_h, left : left + out_w]
        return self._normalise(image.contiguous())

    # ---------------------------------------------------------------- the pipeline

    def _to_float(self, batch: torch.Tensor) -> torch.Tensor:
        if not isinstance(batch, torch.Tensor) or batch.dim() != 4 or batch.shape[1] not in (1, 3):
            shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
            raise DataError(
                f"augmentation expects a (B, C, H, W) batch with C in {{1, 3}}, got {shape}"
            )
        if self.mean is not None and len(self.mean) != batch.shape[1]:
            raise ConfigError(
                f"normalisation mean {self.mean} / std {self.std} has {len(self.mean)} values "
                f"but the images have {batch.shape[1]} channels"
            )
        if batch.dtype == torch.uint8:
            return batch.to(torch.float32).mul_(1.0 / 255.0)
        if not batch.is_floating_point():
            raise DataError(f"augmentation expects uint8 or float images, got dtype {batch.dtype}")
        if batch.dtype in (torch.float16, torch.bfloat16):
            return batch.to(torch.float32)
        return batch

    def _view(
        self, image: torch.Tensor, config: ViewConfig, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        b, c, h, w = image.shape
        rand_device = generator.device if generator is not None else image.device
        uniforms = torch.rand(b, _N_UNIFORMS, generator=generator, device=rand_device)
        params = _draw_params(uniforms, config, h, w, c)
        device = image.device

        out = self._resample(image, params["crop"].to(device), params["flip"].to(device))

        if params["jitter"].any():
            out = _colour_jitter(out, params, config, c)
        if c == 3 and config.grayscale_prob > 0:
            out = _apply_subset(out, params["grayscale"], lambda x, _: to_grayscale(x))
        if config.blur_prob > 0:
            kernel = (blur_kernel_size(self.size[0]), blur_kernel_size(self.size[1]))
            sigma = params["blur_sigma"]
            out = _apply_subset(
                out, sigma > 0, lambda x, idx: gaussian_blur(x, sigma[idx].to(device), kernel)
            )
        if config.solarize_prob > 0:
            out = _apply_subset(out, params["solarize"], lambda x, _: solarize(x))
        if self.interpolation == "bicubic":
            out = out.clamp_(0.0, 1.0)  # bicubic overshoots; other ops keep [0, 1] themselves
        return self._normalise(out), params

    def _resample(
        self, image: torch.Tensor, crop: torch.Tensor, flip: torch.Tensor
    ) -> torch.Tensor:
        """Crop every box, resize it to ``size`` and flip the flagged ones: one grid_sample."""
        b, _, h, w = image.shape
        out_h, out_w = self.size
        dtype = image.dtype
        crop = crop.to(dtype)
        # Normalised coordinates (align_corners=False): -1 and 1 are the outer edges of the
        # image, so the box [x0, x1] maps to centre (x0 + x1) / w - 1 and half-width (x1 - x0) / w.
        centre_x = (crop[:, 0] + crop[:, 2]) / w - 1.0
        centre_y = (crop[:, 1] + crop[:, 3]) / h - 1.0
        half_x = (crop[:, 2] - crop[:, 0]) / w
        half_y = (crop[:, 3] - crop[:, 1]) / h
        half_x = torch.where(flip, -half_x, half_x)
        base_x = (
            torch.arange(out_w, device=image.device, dtype=dtype)
            .mul_(2.0 / out_w)
            .add_(1.0 / out_w - 1.0)
        )
        base_y = (
            torch.arange(out_h, device=image.device, dtype=dtype)
            .mul_(2.0 / out_h)
            .add_(1.0 / out_h - 1.0)
        )
        grid_x = torch.addcmul(centre_x[:, None], half_x[:, None], base_x[None, :])
        grid_y = torch.addcmul(centre_y[:, None], half_y[:, None], base_y[None, :])
        shape = (b, out_h, out_w)
        grid = torch.stack((grid_x[:, None, :].expand(shape), grid_y[:, :, None].expand(shape)), -1)
        return F.grid_sample(
            image, grid, mode=self.interpolation, padding_mode="border", align_corners=False
        )

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        key = (c, x.device, x.dtype)
        if key not in self._stats_cache:
            if self.mean is not None and self.std is not None:
                mean, std = self.mean, self.std  # length checked against C in _to_float
            elif c == 3:
                mean, std = IMAGENET_MEAN, IMAGENET_STD
            else:
                mean, std = FASHION_MNIST_MEAN, FASHION_MNIST_STD
            scale = torch.tensor([1.0 / s for s in std], dtype=x.dtype, device=x.device)
            shift = -torch.tensor(mean, dtype=x.dtype, device=x.device) * scale
            self._stats_cache[key] = (scale.view(1, c, 1, 1), shift.view(1, c, 1, 1))
        scale, shift = self._stats_cache[key]
        out = torch.addcmul(shift, x, scale)
        return out if out.dtype == self.out_dtype else out.to(self.out_dtype)


# -------------------------------------------------------------------- helpers


def _draw_params(
    uniforms: torch.Tensor, config: ViewConfig, h: int, w: int, channels: int
) -> dict[str, torch.Tensor]:
    """Turn a ``(B, 36)`` block of U[0, 1) draws into the per-sample parameters of one view."""
    area = float(h * w)
    scale_lo, scale_hi = config.crop_scale
    log_lo, log_hi = math.log(config.crop_ratio[0]), math.log(config.crop_ratio[1])
    scale = scale_lo + (scale_hi - scale_lo) * uniforms[:, _U_SCALE]
    ratio = torch.exp(log_lo + (log_hi - log_lo) * uniforms[:, _U_RATIO])
    widths = torch.sqrt(area * scale * ratio)
    heights = torch.sqrt(area * scale / ratio)
    fits = (widths <= w) & (heights <= h)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # first fitting try (0 if none)
    found = fits.any(dim=1)
    # Central-crop fallback: the whole image with its aspect ratio clamped into crop_ratio.
    image_ratio = w / h
    if image_ratio < config.crop_ratio[0]:
        fallback_w, fallback_h = float(w), w / config.crop_ratio[0]
    elif image_ratio > config.crop_ratio[1]:
        fallback_w, fallback_h = h * config.crop_ratio[1], float(h)
    else:
        fallback_w, fallback_h = float(w), float(h)
    box_w = torch.where(found, widths.gather(1, first).squeeze(1), fallback_w)
    box_h = torch.where(found, heights.gather(1, first).squeeze(1), fallback_h)
    pos_x = torch.where(found, uniforms[:, _U_POS_X], 0.5)
    pos_y = torch.where(found, uniforms[:, _U_POS_Y], 0.5)
    x0 = pos_x * (w - box_w)
    y0 = pos_y * (h - box_h)
    crop = torch.stack((x0, y0, x0 + box_w, y0 + box_h), dim=1)

    u_factors = uniforms[:, _U_FACTORS]
    lows = torch.tensor(
        [
            -config.brightness,
            max(0.0, 1 - config.contrast),
            max(0.0, 1 - config.saturation),
            -config.hue,
        ],
        device=uniforms.device,
    )
    highs = torch.tensor(
        [config.brightness, 1 + config.contrast, 1 + config.saturation, config.hue],
        device=uniforms.device,
    )
    factors = lows + (highs - lows) * u_factors
    sigma_lo, sigma_hi = config.blur_sigma
    blur = uniforms[:, _U_BLUR] < config.blur_prob
    sigma = sigma_lo + (sigma_hi - sigma_lo) * uniforms[:, _U_SIGMA]
    grayscale = uniforms[:, _U_GRAY] < config.grayscale_prob
    if channels != 3:
        grayscale = torch.zeros_like(grayscale)
    return {
        "crop": crop,
        "flip": uniforms[:, _U_FLIP] < config.flip_prob,
        "jitter": uniforms[:, _U_JITTER] < config.jitter_prob,
        "jitter_factors": factors,
        "jitter_order": uniforms[:, _U_ORDER].argsort(dim=1),
        "grayscale": grayscale,
        "blur_sigma": torch.where(blur, sigma, torch.zeros_like(sigma)),
        "solarize": uniforms[:, _U_SOLARIZE] < config.solarize_prob,
    }


def _apply_subset(x: torch.Tensor, mask: torch.Tensor, op) -> torch.Tensor:
    """Apply ``op(x[idx], idx)`` to the samples flagged in ``mask`` (on the generator's device).

    The whole batch goes through ``op`` when every sample is selected, no gather then.
    """
    idx = mask.nonzero().squeeze(1)
    n = idx.numel()
    if n == 0:
        return x
    if n == x.shape[0]:
        return op(x, idx).contiguous()
    idx_dev = idx.to(x.device)
    x.index_copy_(0, idx_dev, op(x.index_select(0, idx_dev), idx))
    return x


def _colour_jitter(
    x: torch.Tensor, params: dict[str, torch.Tensor], config: ViewConfig, channels: int
) -> torch.Tensor:
    """Brightness, contrast, saturation and hue in each sample's own order, on jittered samples.

    At each of the 4 positions the jittered rows are regrouped (one gather) so that the samples
    having the same op there are contiguous, each op runs once on its slice, and the slices are
    concatenated. After the last position one scatter puts the rows back in batch order. This
    costs 2 passes over the data per position, against ~4 for a gather and a scatter per op.
    """
    strengths = (config.brightness, config.contrast, config.saturation, config.hue)
    ops = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
    active = [s > 0 and (channels == 3 or op_index < 2) for op_index, s in enumerate(strengths)]
    rows = params["jitter"].nonzero().squeeze(1)  # batch index of each working row
    if not any(active) or rows.numel() == 0:
        return x
    order = params["jitter_order"]
    factors = params["jitter_factors"]
    work = x
    for position in range(4):
        op_at_row = order[rows, position]
        regroup = op_at_row.argsort(stable=True)
        counts = torch.bincount(op_at_row, minlength=4).tolist()
        # The first gather reads straight from the batch, the later ones from the working rows.
        source_rows = rows[regroup] if position == 0 else regroup
        work = work.index_select(0, source_rows.to(x.device))
        rows = rows[regroup]
        pieces = []
        start = 0
        for op_index, count in enumerate(counts):
            piece = work[start : start + count]
            if count and active[op_index]:
                piece = ops[op_index](piece, factors[rows[start : start + count], op_index])
            pieces.append(piece)
            start += count
        work = torch.cat(pieces)
    if rows.numel() == x.shape[0]:
        return work.index_select(0, rows.argsort().to(x.device))
    x.index_copy_(0, rows.to(x.device), work)
    return x
