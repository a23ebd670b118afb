"""Augmentations: BYOL's two views, drawn per sample and computed as batched tensor ops.

* :mod:`byol.augment.views` - :class:`ViewConfig` (one view's probabilities and strengths)
  and the named :data:`PRESETS`;
* :mod:`byol.augment.crops` - crop boxes, resampling, flips, whole-image preparation: the
  geometry that evaluation shares;
* :mod:`byol.augment.pipeline` - :class:`BYOLAugment`, the pipeline itself;
* :mod:`byol.color` - the colour operations.
"""

from ..color import (
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
from .crops import pad_crop_flip, prepare_whole_images, random_resized_crop_flip
from .pipeline import JITTER_OPS, BYOLAugment
from .views import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRESETS,
    ViewConfig,
)

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
    "pad_crop_flip",
    "prepare_whole_images",
    "random_resized_crop_flip",
    "rgb_to_hsv",
    "solarize",
    "to_grayscale",
]
