"""``byol embed``: the encoder's features of every image of a dataset, in dataset order."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..runtime import resolve_device
from .load import encode_dataset, load_data_for, load_encoder

__all__ = ["EmbedResult", "companion_paths", "embed"]


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
    batch_size: int | None = None,
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
    run_device = resolve_device(device)
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
