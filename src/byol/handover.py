"""Hand-over of a trained encoder: rebuild it from a checkpoint, embed a dataset, export weights.

* :func:`load_encoder` rebuilds the *online* encoder of a ``byol train`` checkpoint (the network
  whose output ``y`` the paper evaluates), in eval mode, with what is needed to feed it
  (:class:`EncoderInfo`: architecture, stem, channels, normalisation, input size).
* :func:`embed` writes the encoder's features of every image of a dataset split to ``.npy``,
  with the labels (``NAME.labels.npy``) and, for image folders, the source paths
  (``NAME.paths.txt``) in the same, stable order: the dataset's own order.
* :func:`export_encoder` writes the weights to a ``.safetensors`` file plus a JSON sidecar, in
  one of two layouts:

  - ``torchvision`` (ResNet architectures): the keys of the torchvision model of that
    architecture without ``fc``. Load them with::

        import torchvision
        from safetensors.torch import load_file
        from torch import nn

        model = torchvision.models.resnet18(num_classes=1000)   # any num_classes
        model.fc = nn.Identity()
        if small_images:            # from encoder.json: the CIFAR-style stem
            model.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
            model.maxpool = nn.Identity()
        elif in_channels != 3:
            model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        model.load_state_dict(load_file("encoder.safetensors"), strict=True)

    (:func:`torchvision_encoder` does exactly this.)
  - ``byol``: the ``state_dict`` of the module ``byol.backbones.build(arch, ...)`` returns;
    works for every architecture, the small convnets included.

  :func:`load_exported` reads either layout back.

Images fed to an encoder are scaled to [0, 1], normalised with the ``mean`` / ``std`` of the
training data and resized to ``image_size`` (see :func:`byol.evaluate.extract_features`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import backbones
from .checkpoint import load_checkpoint
from .data import ImageData, load_dataset
from .errors import CheckpointError, ConfigError, DataError

__all__ = [
    "EXPORT_LAYOUTS",
    "TORCHVISION_ARCHS",
    "EmbedResult",
    "EncoderInfo",
    "ExportResult",
    "companion_paths",
    "embed",
    "encode_dataset",
    "export_encoder",
    "load_data_for",
    "load_encoder",
    "load_exported",
    "pick_device",
    "read_export_metadata",
    "resolve_checkpoint",
    "run_folder_of",
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
_ENCODER_PREFIX = "online_encoder."
# Images per call of extract_features when a streamed image folder is decoded in pieces.
_STREAM_CHUNK = 4096


@dataclass(frozen=True)
class EncoderInfo:
    """What is needed to rebuild an encoder and feed it images."""

    arch: str
    small_images: bool
    in_channels: int
    feature_dim: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int
    byol_version: str = "unknown"
    # Where the encoder came from; used as defaults by eval / embed / report.
    data: str | None = None
    data_root: str | None = None
    folder_image_size: int | None = None
    step: int | None = None
    source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (``extra`` merged in)."""
        values = asdict(self)
        extra = values.pop("extra")
        values["mean"] = list(self.mean)
        values["std"] = list(self.std)
        return {**values, **extra}


# ------------------------------------------------------------------------------------ loading


def resolve_checkpoint(path: str | Path) -> Path:
    """``path`` itself, or ``path/checkpoints/last.pt`` when ``path`` is a run folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        candidate = path / "checkpoints" / "last.pt"
        if not candidate.exists():
            raise CheckpointError(
                f"{path} is a folder without checkpoints/last.pt; pass a checkpoint file "
                "or a byol run folder"
            )
        return candidate
    return path


def run_folder_of(checkpoint: str | Path) -> Path | None:
    """The run folder holding ``checkpoint`` (``RUN/checkpoints/X.pt``), or None."""
    checkpoint = Path(checkpoint).expanduser().absolute()
    if checkpoint.is_dir() and (checkpoint / "checkpoints").is_dir():
        return checkpoint
    folder = checkpoint.parent.parent
    if checkpoint.parent.name == "checkpoints" and (folder / "config.yaml").is_file():
        return folder
    return None


def _require(mapping: dict[str, Any], key: str, where: str, path: Path) -> Any:
    if key not in mapping:
        raise CheckpointError(
            f"checkpoint {path} has no {where}[{key!r}]; it was not written by byol train "
            "(or by an incompatible version)"
        )
    return mapping[key]


def _online_encoder_state(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        key[len(_ENCODER_PREFIX) :]: value
        for key, value in model_state.items()
        if key.startswith(_ENCODER_PREFIX)
    }


def load_encoder(
    checkpoint_path: str | Path, *, device: torch.device | str = "cpu"
) -> tuple[nn.Module, EncoderInfo]:
    """Rebuild the online encoder of a ``byol train`` checkpoint (or run folder), in eval mode.

    Returns ``(encoder, info)``. The encoder maps normalised ``(B, in_channels, image_size,
    image_size)`` images to ``(B, feature_dim)`` features. Raises :class:`CheckpointError`
    naming the file when it is missing, unreadable or does not match its architecture.
    """
    path = resolve_checkpoint(checkpoint_path)
    payload = load_checkpoint(path)
    config = payload.get("config")
    data = payload.get("data")
    if not isinstance(config, dict) or not isinstance(data, dict):
        raise CheckpointError(f"checkpoint {path} lacks its 'config' or 'data' entry")
    arch = _require(config, "arch", "config", path)
    image_size = int(_require(data, "image_size", "data", path))
    in_channels = int(_require(data, "channels", "data", path))
    small_images = config.get("small_images")
    if small_images is None:
        small_images = backbones.default_small_images(image_size)
    try:
        encoder, feature_dim = backbones.build(
            arch, small_images=bool(small_images), in_channels=in_channels
        )
    except ConfigError as error:
        raise CheckpointError(f"checkpoint {path}: {error}") from None
    state = _online_encoder_state(payload["model"])
    if not state:
        raise CheckpointError(f"checkpoint {path} holds no online_encoder weights")
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0]
        raise CheckpointError(
            f"checkpoint {path}: the online encoder does not fit a {arch} "
            f"(small_images={small_images}, in_channels={in_channels}): {first_line}"
        ) from None
    info = EncoderInfo(
        arch=arch,
        small_images=bool(small_images),
        in_channels=in_channels,
        feature_dim=int(feature_dim),
        mean=tuple(float(v) for v in _require(data, "mean", "data", path)),
        std=tuple(float(v) for v in _require(data, "std", "data", path)),
        image_size=image_size,
        byol_version=str(payload.get("byol_version", "unknown")),
        data=config.get("data"),
        data_root=config.get("data_root"),
        folder_image_size=config.get("folder_image_size"),
        step=int(payload["step"]) if "step" in payload else None,
        source=str(path),
    )
    return encoder.to(device).eval(), info


def load_data_for(
    info: EncoderInfo,
    data: str | None = None,
    *,
    data_root: str | Path | None = None,
    split: str = "train",
    download: bool = False,
) -> ImageData:
    """Load ``split`` of ``data`` (default: the dataset the encoder was trained on).

    Image folders are read at the encoder's training folder size. Raises :class:`DataError`
    when the images do not have the channels the encoder expects.
    """
    name = data if data is not None else info.data
    if name is None:
        raise ConfigError("no dataset given and the checkpoint does not name one; pass --data")
    root = data_root if data_root is not None else (info.data_root if data is None else None)
    dataset = load_dataset(
        name, root=root, split=split, download=download, image_size=info.folder_image_size
    )
    if len(dataset) == 0:
        raise DataError(f"dataset {name!r} split {split!r} has no images")
    if dataset.channels != info.in_channels:
        raise DataError(
            f"dataset {name!r} has {dataset.channels}-channel images but the encoder "
            f"({info.source or info.arch}) expects {info.in_channels}"
        )
    return dataset


def encode_dataset(
    encoder: nn.Module,
    dataset: ImageData,
    info: EncoderInfo,
    *,
    indices: torch.Tensor | None = None,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Frozen features ``(N, feature_dim)`` (float32, CPU) of ``dataset`` (or its ``indices``),
    in order; streamed image folders are decoded piece by piece."""
    from .evaluate import extract_features

    options = {"mean": info.mean, "std": info.std, "size": info.image_size,
               "batch_size": batch_size, "device": device}  # fmt: skip
    if dataset.images is not None:
        images = dataset.images if indices is None else dataset.images[indices]
        return extract_features(encoder, images, **options)
    order = torch.arange(len(dataset)) if indices is None else torch.as_tensor(indices)
    pieces = [order[start : start + _STREAM_CHUNK] for start in range(0, len(order), _STREAM_CHUNK)]
    chunks = [
        extract_features(encoder, images, **options)
        for images in dataset.batches(pieces, num_workers=0)
    ]
    return torch.cat(chunks)


# ------------------------------------------------------------------------------------ embed


@dataclass
class EmbedResult:
    """Files written by :func:`embed` and the shape of the feature array."""

    features: Path
    shape: tuple[int, int]
    labels: Path | None
    paths: Path | None
    seconds: float


def companion_paths(out: str | Path) -> tuple[Path, Path]:
    """``(labels, paths)`` companion files of feature file ``out``: ``emb.npy`` gives
    ``emb.labels.npy`` and ``emb.paths.txt``."""
    out = Path(out)
    stem = out.name[: -len(".npy")] if out.name.endswith(".npy") else out.name
    return out.with_name(stem + ".labels.npy"), out.with_name(stem + ".paths.txt")


def embed(
    checkpoint: str | Path,
    out: str | Path,
    *,
    data: str | None = None,
    data_root: str | Path | None = None,
    split: str = "train",
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> EmbedResult:
    """Write the encoder features of every image of ``data``/``split`` to ``out`` (``.npy``).

    Rows follow the dataset's order. Alongside: ``<stem>.labels.npy`` (int64, -1 for unlabeled
    items) when the dataset has labels and ``<stem>.paths.txt`` (one source path per line) for
    image folders. ``data`` defaults to the checkpoint's training dataset.
    """
    started = time.perf_counter()
    out = Path(out).expanduser()
    if out.suffix != ".npy":
        raise ConfigError(f"--out {out} must end in .npy")
    run_device = pick_device(device)
    encoder, info = load_encoder(checkpoint, device=run_device)
    dataset = load_data_for(info, data, data_root=data_root, split=split)
    features = encode_dataset(encoder, dataset, info, batch_size=batch_size, device=run_device)
    labels_path, paths_path = companion_paths(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, features.numpy())
        written_labels = written_paths = None
        if dataset.labels is not None:
            np.save(labels_path, dataset.labels.numpy())
            written_labels = labels_path
        if dataset.paths is not None:
            paths_path.write_text("".join(f"{p}\n" for p in dataset.paths))
            written_paths = paths_path
    except OSError as error:
        raise DataError(f"cannot write embeddings to {out}: {error.strerror}") from None
    return EmbedResult(
        features=out, shape=(int(features.shape[0]), int(features.shape[1])),
        labels=written_labels, paths=written_paths, seconds=time.perf_counter() - started,
    )  # fmt: skip


def pick_device(name: torch.device | str | None = None) -> torch.device:
    """``name`` as a device; None or ``auto``: CUDA when available, else the CPU. Raises
    :class:`ConfigError` for an unknown name or CUDA on a machine without it."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {name!r} is not a device (try cpu, cuda or cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name!r} requested but CUDA is not available here")
    return device


# ------------------------------------------------------------------------------------ export


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
    model.fc = nn.Identity()
    if small_images:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


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
