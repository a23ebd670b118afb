"""Encoder builders: torchvision's ResNets, small convnets for CPU-scale runs, and any timm model.

``build(name)`` returns ``(encoder, feature_dim)`` where the encoder maps (B, C, H, W) images
to (B, feature_dim) representations, the classifier removed. ``timm:NAME`` builds
``timm.create_model(NAME, num_classes=0, pretrained=False, in_chans=C)`` (ViT-style models with
``img_size`` set to the view size and ``dynamic_img_size=True``, so that evaluation at another
size works); its feature dimension is the model's ``num_features``. Any other ``nn.Module``
works with :class:`byol.BYOL` directly.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from .errors import ConfigError

__all__ = [
    "ARCHITECTURES",
    "TIMM_PREFIX",
    "ConvNet",
    "adapt_resnet",
    "build",
    "check_arch",
    "default_small_images",
    "timm_kwargs",
    "zero_init_bottlenecks",
]

#: ``--arch timm:NAME`` builds timm's model NAME.
TIMM_PREFIX = "timm:"

_TORCHVISION_RESNETS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "wide_resnet50_2",
    "resnext50_32x4d",
)


class ConvNet(nn.Sequential):
    """Conv3×3-BN-ReLU stages then global average pooling: a fast encoder for 28–32 px images.

    The default (widths 32-64-128-256, strides 1-2-2-2) costs ~40 MFLOP per 32 px image,
    about 1/14 of a small-stem ResNet-18, which makes CPU training practical.
    """

    def __init__(
        self,
        in_channels: int = 3,
        widths: Sequence[int] = (32, 64, 128, 256),
        strides: Sequence[int] = (1, 2, 2, 2),
        blocks_per_stage: int = 1,
    ) -> None:
        if len(widths) != len(strides):
            raise ValueError("widths and strides must have the same length")
        layers: list[nn.Module] = []
        channels = in_channels
        for width, stride in zip(widths, strides, strict=True):
            for block in range(blocks_per_stage):
                layers += [
                    nn.Conv2d(channels, width, 3, stride if block == 0 else 1, 1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                channels = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
        super().__init__(*layers)
        self.feature_dim = channels


def _resnet(name: str, small_images: bool, in_channels: int) -> tuple[nn.Module, int]:
    import torchvision  # imported here: it costs ~2 s of start-up that convnet runs don't need

    model = getattr(torchvision.models, name)(weights=None)
    feature_dim = model.fc.in_features
    adapt_resnet(model, small_images=small_images, in_channels=in_channels)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model, feature_dim


def adapt_resnet(model: nn.Module, *, small_images: bool, in_channels: int) -> nn.Module:
    """A torchvision ResNet as byol's encoder: ``fc`` replaced by ``nn.Identity`` and the stem
    changed for small images (the CIFAR stem of every small-image reproduction: 3x3 stride 1,
    no max-pool) or for ``in_channels`` other than 3. Changes ``model`` in place."""
    model.fc = nn.Identity()
    if small_images:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def _convnet(
    widths: Sequence[int], blocks: int = 1
) -> Callable[[bool, int], tuple[nn.Module, int]]:
    def make(small_images: bool, in_channels: int) -> tuple[nn.Module, int]:
        net = ConvNet(in_channels, widths, (1, 2, 2, 2), blocks)
        return net, net.feature_dim

    return make


_BUILDERS: dict[str, Callable[[bool, int], tuple[nn.Module, int]]] = {
    name: (lambda small, channels, name=name: _resnet(name, small, channels))
    for name in _TORCHVISION_RESNETS
}
_BUILDERS["convnet"] = _convnet((32, 64, 128, 256))
# The fashion-mnist preset's encoder: a 512-d representation for ~30% more work per image at
# 16 px, which paid for itself at equal wall-clock (docs/presets.md, round 4).
_BUILDERS["convnet-512"] = _convnet((32, 64, 128, 512))
# Wider last stages only: the representation is the last stage, and at 16 px it runs on 2x2
# maps, so widening it costs far less than widening every stage (2048: 2.5x the preset's step,
# and +0.39 point of held-out linear top-1 at equal wall-clock; docs/presets.md, round 19).
_BUILDERS["convnet-1024"] = _convnet((32, 64, 128, 1024))
_BUILDERS["convnet-2048"] = _convnet((32, 64, 128, 2048))
_BUILDERS["convnet-wide"] = _convnet((64, 128, 256, 512))
_BUILDERS["convnet-deep"] = _convnet((32, 64, 128, 256), blocks=2)

ARCHITECTURES: tuple[str, ...] = tuple(_BUILDERS)


def default_small_images(image_size: int) -> bool:
    """The small-image stem is the right default for images of 64 px or less."""
    return image_size <= 64


def build(
    name: str,
    *,
    small_images: bool = False,
    in_channels: int = 3,
    image_size: int | None = None,
    zero_init_residual: bool = True,
) -> tuple[nn.Module, int]:
    """Build encoder ``name`` (see ``ARCHITECTURES``, or ``timm:NAME``) without its classifier.

    Returns ``(encoder, feature_dim)``. ``small_images`` swaps a ResNet's stem for the
    CIFAR-style 3×3 stride-1 convolution without max-pool; ``in_channels`` adapts the stem to
    grayscale (1) or other inputs; ``image_size`` (the training views' side) sizes the position
    embedding of timm's ViT-style models. ``zero_init_residual`` starts the last BatchNorm
    scale of every bottleneck block (torchvision's ``Bottleneck``: ResNet-50 and larger) at
    zero, as the reference's ResNet does, so each block starts as the identity; basic blocks
    (ResNet-18/34) keep scale 1, as there. Weights are randomly initialised (nothing is
    downloaded).
    """
    check_arch(name)
    if in_channels < 1:
        raise ConfigError(f"in_channels must be >= 1, got {in_channels}")
    if name.startswith(TIMM_PREFIX):
        return _timm(name[len(TIMM_PREFIX) :], in_channels=in_channels, image_size=image_size)
    encoder, feature_dim = _BUILDERS[name](small_images, in_channels)
    if zero_init_residual and name in _TORCHVISION_RESNETS:
        zero_init_bottlenecks(encoder)
    return encoder, feature_dim


def zero_init_bottlenecks(model: nn.Module) -> int:
    """Zero the last BatchNorm scale (``bn3.weight``) of every torchvision ``Bottleneck`` in
    ``model``; returns how many blocks were changed."""
    from torchvision.models.resnet import Bottleneck

    blocks = [module for module in model.modules() if isinstance(module, Bottleneck)]
    for block in blocks:
        nn.init.zeros_(block.bn3.weight)
    return len(blocks)


def check_arch(name: str) -> None:
    """Raise :class:`ConfigError` unless ``name`` is one of ``ARCHITECTURES`` or ``timm:NAME``
    with a model timm knows (with the closest names when it does not)."""
    if name.startswith(TIMM_PREFIX):
        timm = _import_timm()
        model = name[len(TIMM_PREFIX) :]
        if not timm.is_model(model):
            close = difflib.get_close_matches(model, timm.list_models(), n=3)
            hint = f" (did you mean {', '.join(TIMM_PREFIX + c for c in close)}?)" if close else ""
            raise ConfigError(f"arch {name!r}: timm has no model {model!r}{hint}")
        return
    if name not in _BUILDERS:
        raise ConfigError(
            f"unknown architecture {name!r}; choose one of: {', '.join(ARCHITECTURES)}, or "
            "timm:NAME for any timm model"
        )


def timm_kwargs(model: Any, *, in_channels: int, image_size: int | None) -> dict[str, Any]:
    """The ``timm.create_model`` keyword arguments byol uses for ``model`` (a timm module or
    its name): no classifier, random weights, ``in_chans``, and for ViT-style models the view
    size with dynamic image sizes."""
    kwargs: dict[str, Any] = {"num_classes": 0, "in_chans": in_channels}
    if image_size and hasattr(model, "patch_embed"):
        kwargs.update(img_size=image_size, dynamic_img_size=True)
    return kwargs


def _import_timm():
    try:
        import timm
    except ImportError:  # pragma: no cover - timm is a dependency
        raise ConfigError("--arch timm:NAME needs the timm package: pip install timm") from None
    return timm


def _timm(name: str, *, in_channels: int, image_size: int | None) -> tuple[nn.Module, int]:
    timm = _import_timm()
    model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_channels)
    kwargs = timm_kwargs(model, in_channels=in_channels, image_size=image_size)
    if "img_size" in kwargs:  # rebuilt with the position embedding of the view size
        model = timm.create_model(name, pretrained=False, **kwargs)
    return model, int(model.num_features)
