"""The run plan: every setting derived from the config and the data, decided in one place.

A config leaves some choices to the data (``augment: auto``, the ResNet stem, the view and
evaluation sizes) and the schedules are counted in epochs. :func:`make_plan` turns config +
data into a :class:`RunPlan`; training builds everything from it, the checkpoint and
``config.yaml`` record it, and hand-over (evaluation, embedding, export, report) rebuilds the
encoder from the recorded plan instead of working the choices out again.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .augment import PRESETS as AUGMENT_PRESETS
from .augment import ViewConfig
from .backbones import default_small_images
from .config import TrainConfig
from .errors import ConfigError

__all__ = ["RunPlan", "augment_preset", "make_plan", "resolve_views"]


@dataclass(frozen=True)
class RunPlan:
    """What a run trains on and for how long, as derived from its config and data.

    ``view_size`` is the side of the augmented training views, ``image_size`` the side whole
    images are resized to when the encoder is evaluated, monitored, embedded or exported.
    The schedule fields are None in plans read back from checkpoints of byol < 0.2.
    """

    view_size: int
    image_size: int
    small_images: bool
    augment: str
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    steps_per_epoch: int | None = None
    total_steps: int | None = None
    warmup_steps: int | None = None
    peak_lr: float | None = None
    # The two views' resolved augmentation settings (ViewConfig fields), the preset with the
    # config's crop_min_scale and augment.view1 / augment.view2 overrides applied.
    view_configs: tuple[dict[str, Any], dict[str, Any]] | None = None
    # The precision the run trains in, resolved from the config and the hardware at its start
    # (a resumed run keeps it).
    precision: str | None = None
    # Whether the run trains on full-resolution files (a folder or shards read without
    # --folder-image-size): its crops are cut from the whole files by the loader, and whole
    # images are shown as the centre ``eval_crop_fraction`` of the shorter side.
    full_resolution: bool = False
    eval_crop_fraction: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["mean"], values["std"] = list(self.mean), list(self.std)
        if self.view_configs is not None:  # plain lists for YAML
            values["view_configs"] = [
                {k: list(v) if isinstance(v, tuple) else v for k, v in view.items()}
                for view in self.view_configs
            ]
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunPlan:
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in values.items() if k in known}
        fields["mean"] = tuple(float(v) for v in fields["mean"])
        fields["std"] = tuple(float(v) for v in fields["std"])
        if fields.get("view_configs") is not None:
            fields["view_configs"] = tuple(dict(view) for view in fields["view_configs"])
        return cls(**fields)

    def views(self) -> tuple[ViewConfig, ViewConfig]:
        """The two views' augmentation settings (the preset alone in plans of byol < 0.2)."""
        if self.view_configs is None:
            return AUGMENT_PRESETS[self.augment]
        # Plans written before crop_law existed were trained with torchvision's law.
        first, second = (ViewConfig(**{"crop_law": "torchvision", **view})
                         for view in self.view_configs)  # fmt: skip
        return first, second


def resolve_views(
    preset: str,
    crop_min_scale: float | None = None,
    overrides: tuple[dict[str, Any], dict[str, Any]] = ({}, {}),
    crop_law: str | None = None,
) -> tuple[ViewConfig, ViewConfig]:
    """The preset's two views with ``crop_min_scale``, ``crop_law`` and each view's overrides
    applied."""
    views = []
    for view, changes in zip(AUGMENT_PRESETS[preset], overrides, strict=True):
        if crop_min_scale is not None:
            view = dataclasses.replace(view, crop_scale=(crop_min_scale, view.crop_scale[1]))
        if crop_law is not None:
            view = dataclasses.replace(view, crop_law=crop_law)
        views.append(dataclasses.replace(view, **changes))
    return views[0], views[1]


def augment_preset(config: TrainConfig, view_size: int) -> str:
    """``config.augment``, with ``auto`` resolved: the tuned Fashion-MNIST recipe for that
    dataset, the blur-free CIFAR recipe for views of at most 64 px, the paper's above."""
    if config.augment != "auto":
        return config.augment
    if str(config.data).lower() == "fashion-mnist":
        return "fashion-mnist"
    return "cifar" if view_size <= 64 else "imagenet"


#: View side of full-resolution data when the config gives none: the paper's 224 px (or the
#: median shorter side of the files, when smaller).
FULL_RESOLUTION_VIEW_SIZE = 224
#: The reference's evaluation crop: the centre 224 of a shorter side resized to 256.
REFERENCE_EVAL_CROP_FRACTION = 224 / 256


def make_plan(
    config: TrainConfig,
    *,
    image_hw: tuple[int, int] | None,
    channels: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    num_items: int,
    world_size: int = 1,
    typical_side: int | None = None,
) -> RunPlan:
    """The plan of a run of ``config`` on ``num_items`` images of ``image_hw`` pixels
    (None: full-resolution files of varying size, whose median shorter side is
    ``typical_side``).

    Views may be smaller than the images the encoder is evaluated on: a fully convolutional
    encoder trains several times faster on low-resolution crops and, as FixRes (Touvron et al.
    2019) found, a random-resized-crop model sees objects larger at test time, which a higher
    test resolution matches (docs/presets.md measures it). Each rank gets an equal share of
    every batch, so the dataset is cut to a multiple of ``world_size``.
    """
    full_resolution = image_hw is None
    if image_hw is not None:
        view_size = config.image_size or min(image_hw)
    else:
        view_size = config.image_size or min(FULL_RESOLUTION_VIEW_SIZE,
                                             typical_side or FULL_RESOLUTION_VIEW_SIZE)  # fmt: skip
    image_size = config.eval_image_size or view_size
    eval_crop_fraction = 1.0
    if full_resolution:
        eval_crop_fraction = config.eval_crop_fraction or REFERENCE_EVAL_CROP_FRACTION
    small_images = config.small_images
    if small_images is None:
        small_images = default_small_images(image_size)
    # A channel that never varies (blank scans, a solid background) has std 0; one grey level
    # keeps its normalisation finite instead of refusing the data.
    std = tuple(max(value, 1 / 255) for value in std)
    usable = num_items // world_size * world_size
    steps_per_epoch = usable // config.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(
            f"batch_size ({config.batch_size}) is larger than the dataset ({usable} "
            "images); use --batch-size <= the number of images"
        )
    preset = augment_preset(config, view_size)
    overrides = (config.augment_view1, config.augment_view2)
    views = resolve_views(preset, config.crop_min_scale, overrides, config.crop_law)
    return RunPlan(
        view_size=view_size, image_size=image_size, small_images=bool(small_images),
        augment=preset, channels=channels,
        mean=tuple(mean), std=std, steps_per_epoch=steps_per_epoch,
        total_steps=max(1, math.ceil(config.epochs * steps_per_epoch)),
        warmup_steps=round(config.warmup_epochs * steps_per_epoch),
        peak_lr=config.base_lr * config.batch_size / 256,
        view_configs=tuple(dataclasses.asdict(view) for view in views),
        full_resolution=full_resolution, eval_crop_fraction=eval_crop_fraction,
    )  # fmt: skip
