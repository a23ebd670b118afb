"""BYOL's two view augmentation pipelines, drawn per sample and run as batched tensor ops.

Order per view (paper Table 6; docs/method.md): random resized crop → horizontal flip →
colour jitter (brightness, contrast, saturation, hue in a random order per sample, clipped
after each) → grayscale → Gaussian blur → solarisation → clip to [0, 1] → per-channel
normalisation. Every sample draws its own parameters; the batch stays on its device.

How each step is computed:

* **Crop, resize and flip**: :mod:`byol.augment.crops` (one ``grid_sample`` over per-sample
  boxes drawn with the view's ``crop_law``). Views cropped already (by the data loader's
  workers, from full-resolution files: :meth:`BYOLAugment.from_crops`) skip this step.
* **Colour jitter** (:mod:`byol.augment.subsets`) loops over the 4 positions of the order;
  at each, every op runs only on the samples that have it at that position. Each jittered
  sample is thus processed once per op, about 4x less arithmetic than computing all four
  candidates at every position and selecting. Saturation is computed in RGB with an identity
  exactly equal to scaling HSV saturation (see :func:`byol.color.adjust_saturation`); hue goes
  through our batched RGB ↔ HSV conversion.
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

from collections.abc import Sequence
from typing import Literal

import torch

from ..color import blur_kernel_size, gaussian_blur, solarize, to_grayscale
from ..errors import ConfigError, DataError
from .crops import CROP_TRIES, crop_boxes, prepare_whole_images, resample_boxes
from .subsets import JITTER_OPS, apply_subset, colour_jitter
from .views import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRESETS,
    ViewConfig,
)

__all__ = ["JITTER_OPS", "BYOLAugment"]

# Columns of the per-view block of uniforms; fixed so that a seed fixes every draw.
_U_SCALE = slice(0, CROP_TRIES)
_U_RATIO = slice(CROP_TRIES, 2 * CROP_TRIES)
_U_POS_X, _U_POS_Y, _U_FLIP, _U_JITTER = 20, 21, 22, 23
_U_FACTORS = slice(24, 28)
_U_ORDER = slice(28, 32)
_U_GRAY, _U_BLUR, _U_SIGMA, _U_SOLARIZE = 32, 33, 34, 35
_N_UNIFORMS = 36

_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


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
        return self._two_views((image, image), generator, return_params, cropped=False)

    def from_crops(
        self,
        crops: torch.Tensor,
        generator: torch.Generator | None = None,
        return_params: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """The two views from crops made already: ``crops`` is ``(B, 2, C, H, W)`` with
        ``(H, W)`` the view size, view 1's crop and flip at ``[:, 0]`` and view 2's at ``[:, 1]``
        (as the data loader's workers cut them from full-resolution files). Only the
        photometric steps run here, drawn per sample as in :meth:`__call__`; ``params["crop"]``
        is then the whole view and ``params["flip"]`` False.
        """
        if not isinstance(crops, torch.Tensor) or crops.dim() != 5 or crops.shape[1] != 2:
            shape = tuple(crops.shape) if isinstance(crops, torch.Tensor) else type(crops).__name__
            raise DataError(
                f"from_crops expects a (B, 2, C, H, W) batch of crop pairs, got {shape}"
            )
        if tuple(crops.shape[-2:]) != self.size:
            raise DataError(
                f"crops of {tuple(crops.shape[-2:])} pixels given to an augmentation of views "
                f"{self.size}: the loader must cut them at the view size"
            )
        images = []
        for view in (crops[:, 0], crops[:, 1]):
            image = self._to_float(view)
            # The steps below work in place: a float32 batch is the caller's, so copy it; a
            # uint8 one was just converted into a tensor of our own.
            images.append(image.clone(memory_format=torch.contiguous_format)
                          if image is view else image.contiguous())  # fmt: skip
        return self._two_views((images[0], images[1]), generator, return_params, cropped=True)

    def _two_views(
        self,
        images: tuple[torch.Tensor, torch.Tensor],
        generator: torch.Generator | None,
        return_params: bool,
        *,
        cropped: bool,
    ) -> tuple[torch.Tensor, ...]:
        view1, params1 = self._view(images[0], self.configs[0], generator, cropped)
        view2, params2 = self._view(images[1], self.configs[1], generator, cropped)
        return (view1, view2, params1, params2) if return_params else (view1, view2)

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
        centre is cropped (:func:`byol.augment.crops.prepare_whole_images`); an image already of
        that size is only normalised.
        """
        image = prepare_whole_images(self._to_float(batch), self.size).clamp_(0.0, 1.0)
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
        self,
        image: torch.Tensor,
        config: ViewConfig,
        generator: torch.Generator | None,
        cropped: bool = False,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        b, c, h, w = image.shape
        rand_device = generator.device if generator is not None else image.device
        uniforms = torch.rand(b, _N_UNIFORMS, generator=generator, device=rand_device)
        params = _draw_params(uniforms, config, h, w, c)
        device = image.device

        if cropped:  # the loader cropped, resized and flipped already; image is ours
            params["crop"] = torch.tensor([[0.0, 0.0, w, h]], device=rand_device).expand(b, 4)
            params["flip"] = torch.zeros_like(params["flip"])
            out = image
        else:
            out = resample_boxes(
                image, params["crop"], params["flip"], self.size, self.interpolation
            )

        if params["jitter"].any():
            out = colour_jitter(out, params, config, c)
        if c == 3 and config.grayscale_prob > 0:
            out = apply_subset(out, params["grayscale"], lambda x, _: to_grayscale(x))
        if config.blur_prob > 0:
            kernel = (blur_kernel_size(self.size[0]), blur_kernel_size(self.size[1]))
            sigma = params["blur_sigma"]
            out = apply_subset(
                out, sigma > 0, lambda x, idx: gaussian_blur(x, sigma[idx].to(device), kernel)
            )
        if config.solarize_prob > 0:
            out = apply_subset(out, params["solarize"], lambda x, _: solarize(x))
        if self.interpolation == "bicubic":
            out = out.clamp_(0.0, 1.0)  # bicubic overshoots; other ops keep [0, 1] themselves
        return self._normalise(out), params

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
    crop = crop_boxes(
        uniforms[:, _U_SCALE], uniforms[:, _U_RATIO], uniforms[:, _U_POS_X],
        uniforms[:, _U_POS_Y], height=h, width=w, scale=config.crop_scale,
        ratio=config.crop_ratio, law=config.crop_law,
    )  # fmt: skip

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
