"""What each of BYOL's two views is made of: :class:`ViewConfig` and the named presets.

The defaults are the paper's T (view 1) and T' (view 2), Table 6 of Grill et al. (2020):
random resized crop (area 8-100 %, aspect ratio 3/4-4/3), horizontal flip p = 0.5, colour
jitter p = 0.8 (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1, in a random order),
grayscale p = 0.2, Gaussian blur p = 1.0 / 0.1 (sigma 0.1-2.0), solarisation p = 0 / 0.2.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import ConfigError

__all__ = [
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PRESETS",
    "ViewConfig",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Default for single-channel input: the Fashion-MNIST training-set statistics.
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)


@dataclass(frozen=True)
class ViewConfig:
    """Probabilities and strengths of one view's augmentations (defaults: the paper's T)."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    # "reference" (one draw, clamped, the official code) or "torchvision" (ten-try rejection);
    # see byol.augment.crops.
    crop_law: str = "reference"
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
        if self.crop_law not in ("reference", "torchvision"):
            raise ConfigError(
                f"ViewConfig.crop_law must be 'reference' or 'torchvision', got {self.crop_law!r}"
            )
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
#: least a quarter of the image and torchvision's crop law, the one it was tuned with
#: (docs/presets.md).
PRESETS: dict[str, tuple[ViewConfig, ViewConfig]] = {
    "imagenet": (_VIEW1, _VIEW2),
    "cifar": (_CIFAR1, _CIFAR2),
    # 28 px images: crops below a quarter of the image lose the garment (docs/presets.md).
    "fashion-mnist": (
        replace(_CIFAR1, crop_scale=(0.25, 1.0), crop_law="torchvision"),
        replace(_CIFAR2, crop_scale=(0.25, 1.0), crop_law="torchvision"),
    ),
}
