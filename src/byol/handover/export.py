"""``byol export``: the online encoder as ``safetensors`` with a JSON sidecar, and back.

Two layouts:

- ``torchvision`` (ResNet architectures): the keys of the torchvision model of that
  architecture without ``fc``; :func:`torchvision_encoder` builds the model that receives them
  (``fc`` = ``nn.Identity``, the stem adapted as in training; see docs/evaluation.md for the
  same in a few lines of plain torchvision).
- ``timm`` (``timm:NAME`` architectures): the module's own keys, which
  ``timm.create_model(NAME, num_classes=0, ...)`` loads strictly (the sidecar's ``load`` line
  has the keyword arguments).
- ``byol``: the ``state_dict`` of the module ``byol.backbones.build(arch, ...)`` returns;
  works for every architecture, the small convnets included.

``auto`` (the default) picks the first that applies.

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
    "auto_layout",
    "export_encoder",
    "load_exported",
    "load_line",
    "read_export_metadata",
    "sidecar_path",
    "torchvision_encoder",
]

#: ``auto`` picks torchvision for torchvision ResNets, timm for ``timm:`` models, byol otherwise.
EXPORT_LAYOUTS: tuple[str, ...] = ("auto", "torchvision", "timm", "byol")
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


def auto_layout(arch: str) -> str:
    """The layout ``--format auto`` writes for ``arch``."""
    if arch in TORCHVISION_ARCHS:
        return "torchvision"
    return "timm" if arch.startswith(backbones.TIMM_PREFIX) else "byol"


def load_line(info: EncoderInfo, layout: str, weights: str, encoder: nn.Module) -> str:
    """One line of Python that loads an export of ``encoder`` in ``layout`` into the library
    it is for."""
    load = f'safetensors.torch.load_file("{weights}")'
    if layout == "timm":
        name = info.arch[len(backbones.TIMM_PREFIX) :]
        options = backbones.timm_kwargs(
            encoder, in_channels=info.in_channels, image_size=info.view_size
        )
        arguments = ", ".join(f"{k}={v!r}" for k, v in options.items())
        return f'timm.create_model("{name}", {arguments}).load_state_dict({load}, strict=True)'
    if layout == "torchvision":
        return (f"byol.handover.torchvision_encoder({info.arch!r}, small_images="
                f"{info.small_images}, in_channels={info.in_channels})"
                f".load_state_dict({load}, strict=True)")  # fmt: skip
    return f'byol.handover.load_exported("{weights}")'


def export_encoder(
    checkpoint: str | Path, out: str | Path, *, layout: str = "auto"
) -> ExportResult:
    """Export the online encoder of ``checkpoint`` to ``out`` (``.safetensors``) + sidecar JSON.

    ``layout="torchvision"`` (ResNets only) writes the keys of the torchvision model without
    ``fc``; ``"timm"`` (``timm:`` models) the keys of ``timm.create_model(NAME, num_classes=0,
    ...)``, which are the module's own; ``"byol"`` the keys of the ``byol.backbones.build``
    module (any architecture); ``"auto"`` (the default) the first of these that applies. The
    metadata (arch, small_images, in_channels, feature_dim, mean, std, image_size,
    byol_version, layout, and ``load``: one line of Python that loads the file) goes both in the
    safetensors header and in ``<stem>.json``.
    """
    from safetensors.torch import save_file

    if layout not in EXPORT_LAYOUTS:
        raise ConfigError(f"--format must be one of {', '.join(EXPORT_LAYOUTS)}, got {layout!r}")
    out = Path(out).expanduser()
    if out.suffix != ".safetensors":
        raise ConfigError(f"--out {out} must end in .safetensors")
    encoder, info = load_encoder(checkpoint)
    if layout == "auto":
        layout = auto_layout(info.arch)
    if layout == "torchvision" and info.arch not in TORCHVISION_ARCHS:
        raise ConfigError(
            f"--format torchvision needs a ResNet architecture but {info.source} holds a "
            f"{info.arch!r} encoder; use --format auto or byol"
        )
    if layout == "timm" and not info.arch.startswith(backbones.TIMM_PREFIX):
        raise ConfigError(
            f"--format timm needs a timm:NAME architecture but {info.source} holds a "
            f"{info.arch!r} encoder; use --format auto or byol"
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
    load = load_line(info, layout, out.name, encoder)
    metadata = {**info.to_dict(), "layout": layout, "load": load}
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
        else:  # the byol and timm layouts are both the keys of the module byol builds
            encoder, _ = backbones.build(arch, small_images=small_images, in_channels=in_channels,
                                         image_size=metadata.get("view_size"))  # fmt: skip
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
