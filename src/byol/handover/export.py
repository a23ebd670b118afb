"""``byol export``: the online encoder as ``safetensors`` with a JSON sidecar, and back.

Two layouts:

- ``torchvision`` (ResNet architectures): the keys of the torchvision model of that
  architecture without ``fc``; :func:`torchvision_encoder` builds the model that receives them
  (``fc`` = ``nn.Identity``, the stem adapted as in training; see docs/evaluation.md for the
  same in a few lines of plain torchvision).
- ``byol``: the ``state_dict`` of the module ``byol.backbones.build(arch, ...)`` returns;
  works for every architecture, the small convnets included.

:func:`load_exported` reads either layout back.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import backbones
from ..errors import CheckpointError, ConfigError
from .load import EncoderInfo, load_encoder

__all__ = [
    "EXPORT_LAYOUTS",
    "TORCHVISION_ARCHS",
    "ExportResult",
    "export_encoder",
    "load_exported",
    "read_export_metadata",
    "sidecar_path",
    "torchvision_encoder",
]

EXPORT_LAYOUTS: tuple[str, ...] = ("torchvision", "byol")
# The architectures whose byol module is a torchvision ResNet with ``fc`` replaced.
TORCHVISION_ARCHS: frozenset[str] = frozenset(
    name
    for name in backbones.ARCHITECTURES
    if name.startswith(("resnet", "wide_resnet", "resnext"))
)


@dataclass
class ExportResult:
    """Files written by :func:`export_encoder`."""

    weights: Path
    sidecar: Path
    layout: str
    num_tensors: int
    num_parameters: int
    metadata: dict[str, Any]


def torchvision_encoder(arch: str, *, small_images: bool, in_channels: int) -> nn.Module:
    """The torchvision model ``arch`` prepared to receive a ``torchvision``-layout export:
    ``fc`` replaced by ``nn.Identity`` and the stem adapted as in training."""
    import torchvision

    if arch not in TORCHVISION_ARCHS:
        raise ConfigError(f"{arch!r} is not a torchvision architecture; use the byol layout for it")
    model = getattr(torchvision.models, arch)(weights=None)
    return backbones.adapt_resnet(model, small_images=small_images, in_channels=in_channels)


def sidecar_path(weights: str | Path) -> Path:
    """``encoder.safetensors`` → ``encoder.json``."""
    return Path(weights).with_suffix(".json")


def _header_metadata(metadata: dict[str, Any]) -> dict[str, str]:
    # safetensors metadata is str -> str: strings stay as they are, the rest is JSON.
    header = {"format": "pt"}  # what other safetensors readers expect for PyTorch tensors
    for key, value in metadata.items():
        header[key] = value if isinstance(value, str) else json.dumps(value)
    return header


def _parse_header(header: dict[str, str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for key, value in header.items():
        if key == "format":
            continue
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    # A string that happens to parse as JSON (an arch named "1") is restored as a string.
    for key in ("arch", "layout", "byol_version", "data", "source"):
        if key in header:
            parsed[key] = header[key]
    return parsed


def export_encoder(
    checkpoint: str | Path, out: str | Path, *, layout: str = "torchvision"
) -> ExportResult:
    """Export the online encoder of ``checkpoint`` to ``out`` (``.safetensors``) + sidecar JSON.

    ``layout="torchvision"`` (ResNets only) writes the keys of the torchvision model without
    ``fc``; ``layout="byol"`` the keys of the ``byol.backbones.build`` module (any
    architecture). The metadata (arch, small_images, in_channels, feature_dim, mean, std,
    image_size, byol_version, layout, ...) goes both in the safetensors header and in
    ``<stem>.json``.
    """
    from safetensors.torch import save_file

    if layout not in EXPORT_LAYOUTS:
        raise ConfigError(f"--format must be one of {', '.join(EXPORT_LAYOUTS)}, got {layout!r}")
    out = Path(out).expanduser()
    if out.suffix != ".safetensors":
        raise ConfigError(f"--out {out} must end in .safetensors")
    encoder, info = load_encoder(checkpoint)
    if layout == "torchvision" and info.arch not in TORCHVISION_ARCHS:
        raise ConfigError(
            f"--format torchvision needs a ResNet architecture but {info.source} holds a "
            f"{info.arch!r} encoder; use --format byol"
        )
    # safetensors wants contiguous, unshared tensors; channels-last training leaves some strided.
    state = {key: value.detach().cpu().contiguous().clone() for key, value in
             encoder.state_dict().items()}  # fmt: skip
    if layout == "torchvision":
        expected = set(
            torchvision_encoder(
                info.arch, small_images=info.small_images, in_channels=info.in_channels
            ).state_dict()
        )
        if set(state) != expected:
            missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
            raise CheckpointError(
                f"the encoder in {info.source} does not match torchvision's {info.arch}: "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
    # data_root / folder_image_size describe the training machine's files, not the encoder.
    metadata = {**info.to_dict(), "layout": layout}
    metadata = {key: value for key, value in metadata.items()
                if value is not None and key not in ("data_root", "folder_image_size")}  # fmt: skip
    sidecar = sidecar_path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(out), metadata=_header_metadata(metadata))
        # safetensors creates the file 0600 whatever the umask; a hand-over file should be
        # readable like any other file the user writes.
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(out, 0o666 & ~mask)
        sidecar.write_text(json.dumps(metadata, indent=2) + "\n")
    except OSError as error:
        raise CheckpointError(f"cannot write {out}: {error.strerror}") from None
    return ExportResult(
        weights=out, sidecar=sidecar, layout=layout, num_tensors=len(state),
        num_parameters=sum(p.numel() for p in encoder.parameters()), metadata=metadata,
    )  # fmt: skip


def read_export_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of an exported encoder: its safetensors header, else its JSON sidecar."""
    from safetensors import safe_open

    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"exported encoder {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except Exception as error:  # safetensors raises its own error types for bad files
        raise CheckpointError(f"{path} is not a readable safetensors file: {error}") from None
    metadata = _parse_header(header)
    if "arch" not in metadata and sidecar_path(path).is_file():
        try:
            metadata = json.loads(sidecar_path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise CheckpointError(f"cannot read {sidecar_path(path)}: {error}") from None
    if "arch" not in metadata:
        raise CheckpointError(
            f"{path} has no byol metadata (arch, ...) in its header nor a {sidecar_path(path).name}"
        )
    return metadata


def load_exported(
    path: str | Path, *, device: torch.device | str = "cpu"
) -> tuple[nn.Module, EncoderInfo]:
    """Rebuild an encoder written by :func:`export_encoder` (either layout), in eval mode.

    The torchvision layout gives a torchvision model (``fc`` = ``nn.Identity``); the byol layout
    the ``byol.backbones.build`` module. Loading is strict: every key must match.
    """
    from safetensors.torch import load_file

    metadata = read_export_metadata(path)
    try:
        arch = metadata["arch"]
        small_images = bool(metadata["small_images"])
        in_channels = int(metadata["in_channels"])
        layout = metadata.get("layout", "byol")
        if layout == "torchvision":
            encoder = torchvision_encoder(arch, small_images=small_images, in_channels=in_channels)
        else:
            encoder, _ = backbones.build(arch, small_images=small_images, in_channels=in_channels)
        encoder.load_state_dict(load_file(str(path)), strict=True)
        known = {name for name in EncoderInfo.__dataclass_fields__ if name != "extra"}
        fields = {key: value for key, value in metadata.items() if key in known}
        fields["mean"] = tuple(float(v) for v in fields["mean"])
        fields["std"] = tuple(float(v) for v in fields["std"])
        extra = {key: value for key, value in metadata.items() if key not in known}
        info = EncoderInfo(**fields, extra=extra)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"cannot rebuild the encoder in {path}: {error}") from None
    return encoder.to(device).eval(), info
