"""The data of a training run and its monitors: k-NN top-1 and RankMe.

:func:`load_training_data` loads the pre-training split and the monitor's memory bank: at most
``knn_bank_size`` pre-training images (labelled ones when there are labels), with the test
split or ``holdout`` images held out of pre-training as k-NN queries. :class:`KnnMonitor`,
at the end of every ``knn_every``-th epoch, scores the online encoder's features of the
queries against the bank's with the weighted k-NN of :mod:`byol.evaluate`, and computes the
label-free RankMe (:func:`byol.evaluate.rankme`) of the bank's representations and of their
projections. Unlabelled data gets RankMe alone.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import torch

from ..config import TrainConfig
from ..data import ImageData, default_pretrain_split, load_dataset
from ..errors import ConfigError, DataError
from .batches import epoch_order

__all__ = ["KnnMonitor", "load_training_data"]

# Fixed seeds of the holdout and bank draws: the same images whatever the run's seed.
HOLDOUT_SEED = 12345
BANK_SEED = 54321


@dataclass
class KnnMonitor:
    """k-NN top-1 of the queries against the bank, both encoded by the online encoder."""

    bank: ImageData
    queries: ImageData | None
    k: int
    temperature: float
    queries_from: str = "test split"

    def describe(self) -> str:
        """What the k-NN score is of, e.g. ``k=200, T=0.1; bank: 10000 of the training
        images; queries: the 10000 images of the test split``."""
        if self.queries is None:
            return f"RankMe only (no labels); bank: {len(self.bank)} of the pre-training images"
        return (f"k={self.k}, T={self.temperature:g}; bank: {len(self.bank)} of the "
                f"pre-training images; queries: the {len(self.queries)} images of the "
                f"{self.queries_from}")  # fmt: skip

    @torch.no_grad()
    def score(
        self, model: torch.nn.Module, *, mean, std, size: int, device, crop_fraction: float = 1.0
    ) -> dict[str, float]:
        """``knn_top1`` (with labels), ``rankme`` of the bank's representations and
        ``rankme_projection`` of their online projections. Full-resolution files are shown as
        the centre ``crop_fraction`` of their shorter side at ``size``."""
        from ..evaluate import knn_accuracy, rankme

        bank_images = self.bank.at_size(size, crop_fraction)  # itself unless full resolution
        bank = _features(model.online_encoder, bank_images, mean, std, size, device)
        projector = model.online_projector
        was_training = projector.training
        projector.eval()
        try:
            projections = projector(bank.to(device)).float().cpu()
        finally:
            projector.train(was_training)
        result = {"rankme": rankme(bank), "rankme_projection": rankme(projections)}
        if self.queries is not None:
            query_images = self.queries.at_size(size, crop_fraction)
            queries = _features(model.online_encoder, query_images, mean, std, size, device)
            knn = knn_accuracy(bank, self.bank.labels, queries, self.queries.labels, k=self.k,
                               temperature=self.temperature)  # fmt: skip
            result["knn_top1"] = float(knn["top1"])
        return result


def _features(encoder, data: ImageData, mean, std, size, device) -> torch.Tensor:
    """Frozen features of every image of ``data``; a streamed folder is decoded in pieces."""
    from ..evaluate import extract_features

    options = {"mean": mean, "std": std, "size": size, "device": device}
    if data.images is not None:
        return extract_features(encoder, data.images, **options)
    order = torch.arange(len(data))
    pieces = [order[i : i + 1024] for i in range(0, len(order), 1024)]
    return torch.cat([extract_features(encoder, images, **options)
                      for images in data.batches(pieces, num_workers=0)])  # fmt: skip


def check_view_size(config: TrainConfig, data: ImageData) -> None:
    """Refuse training views larger than the images a folder was reduced to: each view would be
    upsampled from a thumbnail, while the files themselves may have the pixels. Fixed-size
    datasets (CIFAR, STL-10, arrays) may be upsampled on purpose: a warning says so."""
    stored = data.image_size
    if stored is None and config.final_image_size is not None:
        raise ConfigError(
            f"--final-image-size {config.final_image_size} needs images held at a fixed size, "
            f"but {config.data} is read at full resolution (its views are cut by the loader's "
            "workers at one size): add --folder-image-size, or drop --final-image-size"
        )
    if stored is None:
        typical = data.typical_side()
        if typical and config.image_size and config.image_size > typical:
            warnings.warn(
                f"--image-size {config.image_size} is larger than the shorter side of most "
                f"images of {config.data} (median {typical} px): their views are upsampled",
                stacklevel=3,
            )
        return
    if not config.image_size or config.image_size <= min(stored):
        return
    if config.folder_image_size is not None and data.paths is not None:  # folder thumbnails
        raise ConfigError(
            f"--image-size {config.image_size} is larger than the --folder-image-size "
            f"{config.folder_image_size} thumbnails the folder {config.data} is read as: every "
            "view would be upsampled. Drop --folder-image-size to crop the views from the "
            "full-resolution files, or ask for views of at most the thumbnail size"
        )
    warnings.warn(
        f"--image-size {config.image_size} is larger than the {min(stored)} px images of "
        f"{config.data}: every training view is upsampled from them",
        stacklevel=3,
    )


def load_training_data(config: TrainConfig) -> tuple[ImageData, KnnMonitor | None]:
    """The pre-training data and, when the data is labelled, the k-NN monitor."""
    split = default_pretrain_split(config.data)
    data = load_dataset(
        config.data, root=config.data_root, split=split, download=config.download,
        image_size=config.folder_image_size, strict=config.strict,
    )  # fmt: skip
    if len(data) == 0:
        raise DataError(f"dataset {config.data!r} has no images")
    check_view_size(config, data)
    queries, queries_from = None, "test split"
    labeled = data.labels is not None and bool((data.labels >= 0).any())
    if config.holdout:
        if config.holdout >= len(data):
            raise ConfigError(
                f"holdout ({config.holdout}) must be smaller than the dataset ({len(data)})"
            )
        order = epoch_order(len(data), HOLDOUT_SEED, 0)
        queries = data.subset(order[-config.holdout :]) if labeled else None
        queries_from = "holdout (--holdout, kept out of pre-training)"
        data = data.subset(order[: -config.holdout])
    elif labeled:
        with contextlib.suppress(DataError, ConfigError):
            queries = load_dataset(
                config.data, root=config.data_root, split="test",
                image_size=config.folder_image_size, strict=config.strict,
            )  # fmt: skip
    if labeled and queries is not None:
        candidates = torch.nonzero(data.labels >= 0).flatten()
    else:  # RankMe alone, on unlabelled images
        candidates, queries = torch.arange(len(data)), None
    pick = candidates[epoch_order(len(candidates), BANK_SEED, 0)[: config.knn_bank_size]]
    bank = data.subset(pick.sort().values)
    return data, KnnMonitor(bank, queries, config.knn_k, config.knn_temperature, queries_from)
