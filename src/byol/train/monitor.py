"""The data of a training run and its k-NN monitor.

:func:`load_training_data` loads the pre-training split and, for labelled data, the monitor's
memory bank (at most ``knn_bank_size`` labelled training images) and queries (the test split,
or ``holdout`` images held out of pre-training). :class:`KnnMonitor` scores the online
encoder's features of the queries against the bank's with the weighted k-NN of
:mod:`byol.evaluate`, at the end of every ``knn_every``-th epoch.
"""

from __future__ import annotations

import contextlib
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
    queries: ImageData
    k: int
    temperature: float
    queries_from: str = "test split"

    def describe(self) -> str:
        """What the score is of, e.g. ``k=200, T=0.1; bank: 10000 of the training images;
        queries: the 10000 images of the test split``."""
        return (f"k={self.k}, T={self.temperature:g}; bank: {len(self.bank)} of the "
                f"pre-training images; queries: the {len(self.queries)} images of the "
                f"{self.queries_from}")  # fmt: skip

    def score(self, encoder: torch.nn.Module, *, mean, std, size: int, device) -> float:
        from ..evaluate import extract_features, knn_accuracy

        bank_features, query_features = (
            extract_features(encoder, part.images, mean=mean, std=std, size=size, device=device)
            for part in (self.bank, self.queries)
        )
        result = knn_accuracy(
            bank_features, self.bank.labels, query_features, self.queries.labels,
            k=self.k, temperature=self.temperature,
        )  # fmt: skip
        return float(result["top1"])


def load_training_data(config: TrainConfig) -> tuple[ImageData, KnnMonitor | None]:
    """The pre-training data and, when the data is labelled, the k-NN monitor."""
    split = default_pretrain_split(config.data)
    data = load_dataset(
        config.data, root=config.data_root, split=split, download=config.download,
        image_size=config.folder_image_size, strict=config.strict,
    )  # fmt: skip
    if len(data) == 0:
        raise DataError(f"dataset {config.data!r} has no images")
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
    if queries is None or not labeled:
        return data, None
    candidates = torch.nonzero(data.labels >= 0).flatten()
    pick = candidates[epoch_order(len(candidates), BANK_SEED, 0)[: config.knn_bank_size]]
    bank = data.subset(pick.sort().values)
    return data, KnnMonitor(bank, queries, config.knn_k, config.knn_temperature, queries_from)
