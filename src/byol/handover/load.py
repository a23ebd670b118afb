"""Rebuild the online encoder of a ``byol train`` checkpoint and feed it a dataset.

:func:`load_encoder` reads the checkpoint through :func:`byol.state.read_state` (the one
schema training writes) and builds the encoder from the run plan it records;
:class:`EncoderInfo` is what is needed to feed it (architecture, stem, channels,
normalisation, input size). Images fed to an encoder are scaled to [0, 1], normalised with the
``mean`` / ``std`` of the training data and resized to ``image_size`` (see
:func:`byol.evaluate.extract_features`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import backbones
from ..data import ImageData, load_dataset
from ..errors import CheckpointError, ConfigError, DataError
from ..state import TrainState, read_state

__all__ = [
    "EncoderInfo",
    "encode_dataset",
    "encoder_from_state",
    "load_data_for",
    "load_encoder",
    "resolve_checkpoint",
    "run_folder_of",
]

# Images per call of extract_features when a streamed image folder is decoded in pieces.
STREAM_CHUNK = 4096


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
    # The training views' side (sizes the position embedding of ViT-style timm models).
    view_size: int | None = None
    # Where the encoder came from; used as defaults by eval / embed / report.
    data: str | None = None
    data_root: str | None = None
    folder_image_size: int | None = None
    # Trained on full-resolution files: evaluated images are the centre eval_crop_fraction of
    # the shorter side, resized to image_size.
    full_resolution: bool = False
    eval_crop_fraction: float = 1.0
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


def load_encoder(
    checkpoint_path: str | Path, *, device: torch.device | str = "cpu"
) -> tuple[nn.Module, EncoderInfo]:
    """Rebuild the online encoder of a ``byol train`` checkpoint (or run folder), in eval mode.

    Returns ``(encoder, info)``. The encoder maps normalised ``(B, in_channels, image_size,
    image_size)`` images to ``(B, feature_dim)`` features. Raises :class:`CheckpointError`
    naming the file when it is missing, unreadable or does not match its architecture.
    """
    path = resolve_checkpoint(checkpoint_path)
    return encoder_from_state(read_state(path), path, device=device)


def encoder_from_state(
    state: TrainState, path: str | Path, *, device: torch.device | str = "cpu"
) -> tuple[nn.Module, EncoderInfo]:
    """:func:`load_encoder` on an already read checkpoint (``path`` names it in errors)."""
    config, plan = state.config, state.plan
    arch = config.get("arch")
    if not isinstance(arch, str):
        raise CheckpointError(f"checkpoint {path} has no config['arch']")
    try:
        encoder, feature_dim = backbones.build(
            arch, small_images=plan.small_images, in_channels=plan.channels,
            image_size=plan.view_size,
        )  # fmt: skip
    except ConfigError as error:
        raise CheckpointError(f"checkpoint {path}: {error}") from None
    weights = state.encoder_state()
    if not weights:
        raise CheckpointError(f"checkpoint {path} holds no online_encoder weights")
    try:
        encoder.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0]
        raise CheckpointError(
            f"checkpoint {path}: the online encoder does not fit a {arch} "
            f"(small_images={plan.small_images}, in_channels={plan.channels}): {first_line}"
        ) from None
    info = EncoderInfo(
        arch=arch, small_images=plan.small_images, in_channels=plan.channels,
        feature_dim=int(feature_dim), mean=plan.mean, std=plan.std, image_size=plan.image_size,
        byol_version=state.byol_version, view_size=plan.view_size, data=config.get("data"),
        data_root=config.get("data_root"), folder_image_size=config.get("folder_image_size"),
        full_resolution=plan.full_resolution, eval_crop_fraction=plan.eval_crop_fraction,
        step=state.step, source=str(path),
    )  # fmt: skip
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

    Image folders and shards are read as the encoder was trained: at its thumbnail size
    (``--folder-image-size``), or, for full-resolution training, as the centre
    ``eval_crop_fraction`` of each image's shorter side resized to the evaluation size (in
    memory when that fits in 2 GiB). Raises :class:`DataError` when the images do not have the
    channels the encoder expects.
    """
    name = data if data is not None else info.data
    if name is None:
        raise ConfigError("no dataset given and the checkpoint does not name one; pass --data")
    root = data_root if data_root is not None else (info.data_root if data is None else None)
    # A folder or shards: as the training thumbnails, else whole at the evaluation size (the
    # centre eval_crop_fraction of the shorter side); other sources ignore both.
    sizes = {"image_size": info.folder_image_size or info.image_size,
             "crop_fraction": info.eval_crop_fraction}  # fmt: skip
    dataset = load_dataset(name, root=root, split=split, download=download, **sizes)
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
    batch_size: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Frozen features ``(N, feature_dim)`` (float32, CPU) of ``dataset`` (or its ``indices``),
    in order; streamed image folders are decoded piece by piece."""
    from ..evaluate import extract_features

    options = {"mean": info.mean, "std": info.std, "size": info.image_size,
               "batch_size": batch_size, "device": device}  # fmt: skip
    if dataset.images is not None:
        images = dataset.images if indices is None else dataset.images[indices]
        return extract_features(encoder, images, **options)
    order = torch.arange(len(dataset)) if indices is None else torch.as_tensor(indices)
    pieces = [order[start : start + STREAM_CHUNK] for start in range(0, len(order), STREAM_CHUNK)]
    chunks = [
        extract_features(encoder, images, **options)
        for images in dataset.batches(pieces, num_workers=0)
    ]
    return torch.cat(chunks)
