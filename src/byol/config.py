"""Training configuration: one dataclass, presets, YAML files and command-line overrides.

Precedence, lowest first: dataclass defaults < ``preset`` < YAML file < explicit overrides.
Every key is checked: an unknown key or a bad value raises :class:`ConfigError` naming the key
and the valid choices or range.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

__all__ = ["PRESETS", "TrainConfig", "load_config", "resolve"]


@dataclass
class TrainConfig:
    """Everything a ``byol train`` run depends on. Field names are the YAML keys and,
    with ``_`` → ``-``, the command-line flags."""

    # data
    data: str = "fashion-mnist"
    data_root: str | None = None
    download: bool = False
    folder_image_size: int = 64
    holdout: int = 0
    strict: bool = False
    # model
    arch: str = "convnet"
    small_images: bool | None = None
    image_size: int | None = None
    eval_image_size: int | None = None
    hidden_dim: int = 4096
    projection_dim: int = 256
    augment: str = "auto"
    crop_min_scale: float | None = None
    # optimisation
    epochs: float = 100.0
    batch_size: int = 256
    base_lr: float = 0.2
    weight_decay: float = 1.5e-6
    warmup_epochs: float = 10.0
    momentum: float = 0.9
    trust_coefficient: float = 1e-3
    target_decay: float = 0.996
    accumulate: int = 1
    max_steps: int | None = None
    time_limit: float | None = None
    schedule_to_time_limit: bool = False
    # execution
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    parallel_views: bool = True
    num_workers: int = 2
    seed: int = 0
    deterministic: bool = False
    # outputs
    out: str = "runs/byol"
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    knn_every: int = 1
    knn_bank_size: int = 10000
    knn_k: int = 200
    knn_temperature: float = 0.1
    tensorboard: bool = True
    skip_nonfinite: bool = False
    preset: str | None = None
    config: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values.pop("extra")
        return values


CHOICES: dict[str, tuple[str, ...]] = {
    "precision": ("auto", "fp32", "bf16", "fp16"),
    "augment": ("auto", "imagenet", "cifar", "fashion-mnist"),
}

# Ranges are inclusive; None = unbounded.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "epochs": (1e-9, None),
    "batch_size": (2, None),
    # Upper bounds far above any useful value keep the LARS update inside float32.
    "base_lr": (0.0, 1e4),
    "weight_decay": (0.0, 1e4),
    "warmup_epochs": (0.0, None),
    "momentum": (0.0, 0.999999),
    "trust_coefficient": (1e-12, None),
    "target_decay": (0.0, 1.0),
    "accumulate": (1, None),
    "max_steps": (1, None),
    "time_limit": (1e-9, None),
    "hidden_dim": (1, None),
    "projection_dim": (1, None),
    "image_size": (4, None),
    "eval_image_size": (4, None),
    "folder_image_size": (4, None),
    "holdout": (0, None),
    "crop_min_scale": (1e-3, 1.0),
    "num_workers": (0, None),
    "checkpoint_every": (1, None),
    "keep_checkpoints": (1, None),
    "log_every": (1, None),
    "knn_every": (0, None),
    "knn_bank_size": (1, None),
    "knn_k": (1, None),
    "knn_temperature": (1e-9, None),
}

# Presets mirror the reference page (ImageNet by length; lr is the base for batch 256) and
# the project's own tuned small-image recipes (see docs/presets.md for how they were chosen).
PRESETS: dict[str, dict[str, Any]] = {
    "imagenet-40": {"arch": "resnet50", "epochs": 40, "batch_size": 4096, "base_lr": 0.45,
                    "weight_decay": 1e-6, "target_decay": 0.97, "augment": "imagenet",
                    "image_size": 224, "warmup_epochs": 10},
    "imagenet-100": {"arch": "resnet50", "epochs": 100, "batch_size": 4096, "base_lr": 0.45,
                     "weight_decay": 1e-6, "target_decay": 0.99, "augment": "imagenet",
                     "image_size": 224, "warmup_epochs": 10},
    "imagenet-300": {"arch": "resnet50", "epochs": 300, "batch_size": 4096, "base_lr": 0.3,
                     "weight_decay": 1e-6, "target_decay": 0.99, "augment": "imagenet",
                     "image_size": 224, "warmup_epochs": 10},
    "imagenet-1000": {"arch": "resnet50", "epochs": 1000, "batch_size": 4096, "base_lr": 0.2,
                      "weight_decay": 1.5e-6, "target_decay": 0.996, "augment": "imagenet",
                      "image_size": 224, "warmup_epochs": 10},
    # CIFAR reproductions: ResNet-18 with the small-image stem, batch 256, 1000 epochs.
    "cifar": {"arch": "resnet18", "small_images": True, "epochs": 1000, "batch_size": 256,
              "base_lr": 1.0, "weight_decay": 1e-5, "target_decay": 0.99, "augment": "cifar",
              "warmup_epochs": 10},
    "fashion-mnist": {"data": "fashion-mnist", "arch": "convnet-512", "epochs": 4,
                      "batch_size": 128, "base_lr": 4.0, "weight_decay": 1e-5,
                      "target_decay": 0.99, "augment": "fashion-mnist", "warmup_epochs": 0.5,
                      "hidden_dim": 1024, "image_size": 16, "eval_image_size": 28},
}  # fmt: skip


def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(TrainConfig) if f.name != "extra"}


def _unknown_key(key: str, where: str) -> ConfigError:
    valid = sorted(_field_types())
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(
        f"unknown config key {key!r} in {where}{hint}; valid keys: {', '.join(valid)}"
    )


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Convert ``value`` (from YAML or a command-line string) to the field's type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0])
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be an integer, got {value!r}") from None
        if not number.is_integer():
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return int(number)
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a number, got {value!r}") from None
    if annotation is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value)
    return value


def _check(config: TrainConfig) -> None:
    from .backbones import ARCHITECTURES

    for key, choices in CHOICES.items():
        if getattr(config, key) not in choices:
            raise ConfigError(
                f"{key} must be one of {', '.join(choices)}; got {getattr(config, key)!r}"
            )
    if config.arch not in ARCHITECTURES:
        raise ConfigError(f"arch must be one of {', '.join(ARCHITECTURES)}; got {config.arch!r}")
    if config.preset is not None and config.preset not in PRESETS:
        raise ConfigError(f"preset must be one of {', '.join(PRESETS)}; got {config.preset!r}")
    for key, (low, high) in RANGES.items():
        value = getattr(config, key)
        if value is None:
            continue
        if (
            not math.isfinite(value)
            or (low is not None and value < low)
            or (high is not None and value > high)
        ):
            bounds = (
                f"{'(-inf' if low is None else f'[{low}'}, {'inf)' if high is None else f'{high}]'}"
            )
            raise ConfigError(f"{key} must lie in {bounds}, got {value!r}")
    if config.batch_size % config.accumulate:
        raise ConfigError(
            f"batch_size ({config.batch_size}) must be divisible by "
            f"accumulate ({config.accumulate})"
        )
    if config.schedule_to_time_limit and not config.time_limit:
        raise ConfigError(
            "schedule_to_time_limit (--schedule-to-time-limit) fits the schedules to "
            "time_limit; set --time-limit MINUTES as well"
        )
    if not config.device == "auto" and not config.device.startswith(("cpu", "cuda", "mps")):
        raise ConfigError(f"device must be auto, cpu, cuda[:N] or mps; got {config.device!r}")


def resolve(values: dict[str, Any], where: str = "overrides") -> TrainConfig:
    """Build a checked :class:`TrainConfig` from a flat dict (preset applied first)."""
    types_ = _field_types()
    for key in values:
        if key not in types_:
            raise _unknown_key(key, where)
    merged: dict[str, Any] = {}
    preset = values.get("preset")
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"preset must be one of {', '.join(PRESETS)}; got {preset!r}")
        merged.update(PRESETS[preset])
    merged.update(values)
    coerced = {key: _coerce(key, value, types_[key]) for key, value in merged.items()}
    config = TrainConfig(**coerced)
    _check(config)
    return config


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Read a YAML file (flat mapping of keys) and apply ``overrides`` on top of it."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as error:
            raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys to values")
        for key in loaded:
            if key not in _field_types():
                raise _unknown_key(str(key), str(path))
        values.update(loaded)
        values["config"] = str(path)
    values.update(overrides or {})
    return resolve(values, where=str(path) if path else "overrides")
