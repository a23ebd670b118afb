"""Config keys that describe themselves: the field descriptor of every config dataclass,
and the coercion and checks derived from it.

:func:`key` declares a field with its help text, group, choices or range and resume rule;
:func:`key_info` reads them back; :func:`coerce` turns YAML or command-line values into the
field's type; :func:`check_values` checks a config against its fields' choices and ranges.
``byol.config.TrainConfig`` and ``byol.bench.BenchConfig`` are declared this way, and the CLI
builds its flags from the same metadata.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Sequence
from typing import Any

import yaml

from .errors import ConfigError

__all__ = ["check_values", "coerce", "key", "key_info"]


def key(
    default: Any,
    help: str,
    group: str,
    *,
    choices: Sequence[str] | None = None,
    low: float | None = None,
    high: float | None = None,
    resumable: bool = False,
    flag: str | None = None,
) -> Any:
    """A config field with its description: help text, group, choices or inclusive range
    [``low``, ``high``], whether it may change on resume, and its flag (default:
    ``--name-with-dashes``)."""
    metadata = {"help": help, "group": group, "choices": tuple(choices) if choices else None,
                "range": (low, high) if low is not None or high is not None else None,
                "resumable": resumable, "flag": flag}  # fmt: skip
    if isinstance(default, dict) and not default:  # an empty mapping of overrides
        return dataclasses.field(default_factory=dict, metadata=metadata)
    if isinstance(default, list | dict | set):
        raise TypeError("config defaults must be immutable (or an empty dict)")
    return dataclasses.field(default=default, metadata=metadata)


def key_info(cls: type) -> dict[str, dict[str, Any]]:
    """Each field of the config dataclass ``cls``: its metadata plus ``type`` and ``default``."""
    hints = typing.get_type_hints(cls)
    return {f.name: {**f.metadata, "type": hints[f.name],
                     "default": {} if f.default_factory is dict else f.default}
            for f in dataclasses.fields(cls)}  # fmt: skip


def coerce(name: str, value: Any, annotation: Any) -> Any:
    """Convert ``value`` (from YAML or a command-line string) to the field's type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(name, value, inner[0])
    if annotation is bool:
        return _coerce_bool(name, value)
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be an integer, got {value!r}") from None
        if not number.is_integer():
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return int(number)
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if origin is dict or annotation is dict:
        if isinstance(value, str):  # a YAML mapping on the command line
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                value = None
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping of keys to values, got {value!r}")
        return dict(value)
    if annotation is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return str(value)
    return value


def _coerce_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def check_values(config: Any, *, flags: bool = False) -> None:
    """Check every field of a config dataclass against its choices and range.

    Errors name the key (or, with ``flags``, the command-line flag).
    """
    for name, info in key_info(type(config)).items():
        value = getattr(config, name)
        label = (info["flag"] or "--" + name.replace("_", "-")) if flags else name
        if info["choices"] and value is not None and value not in info["choices"]:
            raise ConfigError(f"{label} must be one of {', '.join(info['choices'])}; got {value!r}")
        if info["range"] is None or value is None:
            continue
        low, high = info["range"]
        if (
            not math.isfinite(value)
            or (low is not None and value < low)
            or (high is not None and value > high)
        ):
            bounds = (
                f"{'(-inf' if low is None else f'[{low}'}, {'inf)' if high is None else f'{high}]'}"
            )
            raise ConfigError(f"{label} must lie in {bounds}, got {value!r}")
