"""The linear probe on pre-computed features (byol.evaluate.linear)."""

from __future__ import annotations

import math

import pytest
import torch

from byol.errors import ConfigError, DataError
from byol.evaluate import (
    PAPER_LEARNING_RATES,
    knn_accuracy,
    linear,
    linear_probe,
    select_learning_rate,
)

from .helpers import split_blobs


def test_linear_probe_separable_blobs_near_perfect():
    train_x, train_y, test_x, test_y = split_blobs()
    result = linear_probe(train_x, train_y, test_x, test_y, epochs=30, batch_size=128)
    assert result["top1"] > 0.98
    assert result["top5"] >= result["top1"]
    assert result["learning_rate"] in PAPER_LEARNING_RATES
    assert set(result["val_top1_by_lr"]) == set(PAPER_LEARNING_RATES)
    assert max(result["val_top1_by_lr"].values()) > 0.98
    # Stratified 10 % hold-out: a tenth of each class, rounded.
    per_class = torch.bincount(train_y).tolist()
    assert result["n_val"] == sum(round(0.1 * count) for count in per_class)
    assert 40 <= result["n_val"] <= 56
    assert (result["n_train"], result["n_test"], result["epochs"]) == (480, 240, 30)
    assert result["seconds"] > 0


def test_random_labels_give_chance_accuracy():
    # Features carry no information about the (uniform, independent) test labels, so test
    # accuracy is Binomial(n, 1/C) / n whatever the classifier: check a 4.5-sigma band.
    generator = torch.Generator().manual_seed(1)
    num_classes, n_train, n_test = 10, 1000, 2000
    train_x = torch.randn(n_train, 32, generator=generator)
    train_y = torch.randint(0, num_classes, (n_train,), generator=generator)
    test_x = torch.randn(n_test, 32, generator=generator)
    test_y = torch.randint(0, num_classes, (n_test,), generator=generator)
    p = 1 / num_classes
    band = 4.5 * math.sqrt(p * (1 - p) / n_test)

    probe = linear_probe(train_x, train_y, test_x, test_y, epochs=10, batch_size=256)
    knn = knn_accuracy(train_x, train_y, test_x, test_y, k=50)
    for result in (probe, knn):
        assert abs(result["top1"] - p) < band, result
        assert abs(result["top5"] - 5 * p) < 4.5 * math.sqrt(0.25 / n_test), result


def test_linear_probe_is_deterministic_given_seed():
    train_x, train_y, test_x, test_y = split_blobs(spread=2.0)
    kwargs = {"epochs": 5, "batch_size": 64, "seed": 7}
    first = linear_probe(train_x, train_y, test_x, test_y, **kwargs)
    second = linear_probe(train_x, train_y, test_x, test_y, **kwargs)
    first.pop("seconds")
    second.pop("seconds")
    assert first == second


class _TestTrap(torch.Tensor):
    """A tensor that records whether any torch operation touched it while the flag is set."""

    selecting = False
    touched_during_selection = False
    touched_otherwise = False

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if _TestTrap.selecting:
            _TestTrap.touched_during_selection = True
        else:
            _TestTrap.touched_otherwise = True
        return super().__torch_function__(func, types, args, kwargs or {})


def test_test_split_never_used_for_learning_rate_selection(monkeypatch):
    train_x, train_y, test_x, test_y = split_blobs(spread=1.5)
    kwargs = {"epochs": 8, "batch_size": 64, "seed": 3}

    # 1. Test tensors touched while the rate is being chosen would be recorded.
    _TestTrap.touched_during_selection = _TestTrap.touched_otherwise = False
    real_fit_and_select = linear.fit_and_select

    def spy(*args, **kw):
        _TestTrap.selecting = True
        try:
            return real_fit_and_select(*args, **kw)
        finally:
            _TestTrap.selecting = False

    monkeypatch.setattr(linear, "fit_and_select", spy)
    trapped = linear_probe(
        train_x, train_y, test_x.as_subclass(_TestTrap), test_y.as_subclass(_TestTrap), **kwargs
    )
    assert not _TestTrap.touched_during_selection
    assert _TestTrap.touched_otherwise  # the trap works: the test set is used, afterwards
    monkeypatch.undo()

    # 2. Whatever the test set holds, the choice and the validation scores are the same.
    generator = torch.Generator().manual_seed(0)
    permuted = test_y[torch.randperm(test_y.numel(), generator=generator)]
    shuffled_features = torch.randn(test_x.shape, generator=generator) * 100
    other = linear_probe(train_x, train_y, shuffled_features, permuted, **kwargs)
    for key in ("learning_rate", "val_top1_by_lr", "val_loss_by_lr", "n_val"):
        assert trapped[key] == other[key]
    assert trapped["top1"] != other["top1"]  # the test set did change: only the score

    # 3. The training-only selection function gives the same choice and scores.
    selection = select_learning_rate(train_x, train_y, **kwargs)
    assert selection["learning_rate"] == trapped["learning_rate"]
    assert selection["val_top1_by_lr"] == trapped["val_top1_by_lr"]


def test_final_classifier_equals_a_single_rate_run_on_all_training_data():
    # The final classifier is trained alongside the selection ones; it must be the same model
    # as a separate run with only the chosen rate (no hold-out) on the same minibatches.
    train_x, train_y, test_x, test_y = split_blobs(spread=1.0)
    kwargs = {"epochs": 6, "batch_size": 100, "seed": 5}
    swept = linear_probe(train_x, train_y, test_x, test_y, **kwargs)
    alone = linear_probe(
        train_x, train_y, test_x, test_y, learning_rates=[swept["learning_rate"]], **kwargs
    )
    assert alone["n_val"] == 0 and alone["val_top1_by_lr"] == {}
    assert 0.3 < swept["top1"] < 0.98  # a problem hard enough for the comparison to mean much
    assert alone["top1"] == pytest.approx(swept["top1"], abs=1.5 / test_y.numel())
    assert alone["top5"] == pytest.approx(swept["top5"], abs=1.5 / test_y.numel())


def test_learning_rate_choice_follows_validation_accuracy():
    # A tiny rate cannot fit in one epoch; a sensible one can: the choice must be the latter.
    train_x, train_y, test_x, test_y = split_blobs(spread=3.0)
    result = linear_probe(
        train_x, train_y, test_x, test_y, learning_rates=(1e-6, 0.1), epochs=1, batch_size=32
    )
    assert result["val_top1_by_lr"][0.1] > result["val_top1_by_lr"][1e-6]
    assert result["learning_rate"] == 0.1


def test_linear_probe_rejects_bad_input():
    train_x, train_y, test_x, test_y = split_blobs()
    with pytest.raises(DataError, match="train_labels"):
        linear_probe(train_x, train_y[:-1], test_x, test_y)
    with pytest.raises(DataError, match="-d"):
        linear_probe(train_x, train_y, test_x[:, :5], test_y)
    bad = train_x.clone()
    bad[3, 4] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        linear_probe(bad, train_y, test_x, test_y)
    with pytest.raises(ConfigError, match="learning_rates"):
        linear_probe(train_x, train_y, test_x, test_y, learning_rates=(0.1, -1.0))
    with pytest.raises(ConfigError, match="val_fraction"):
        linear_probe(train_x, train_y, test_x, test_y, val_fraction=1.0)
    with pytest.raises(ConfigError, match="temperature"):
        knn_accuracy(train_x, train_y, test_x, test_y, temperature=0.0)
