"""Tests of the evaluation protocols (byol.evaluate): k-NN, linear probe, feature extraction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from byol.augment.crops import pad_crop_flip, random_resized_crop_flip
from byol.errors import ConfigError, DataError
from byol.evaluate import (
    PAPER_LEARNING_RATES,
    extract_features,
    format_results_table,
    knn_accuracy,
    knn_predict,
    linear,
    linear_probe,
    linear_probe_augmented,
    pixel_features,
    select_learning_rate,
)

MEAN = (0.5, 0.4, 0.3)
STD = (0.25, 0.2, 0.3)


def _blobs(n_per_class: int, num_classes: int, dim: int, spread: float, seed: int):
    """Gaussian blobs with unit noise around class centres at distance ~``spread``."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=generator)
    centres = spread * centres / centres.norm(dim=1, keepdim=True)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    features = centres[labels] + torch.randn(labels.numel(), dim, generator=generator)
    order = torch.randperm(labels.numel(), generator=generator)
    return features[order], labels[order]


def _split_blobs(num_classes: int = 6, spread: float = 12.0, seed: int = 0):
    features, labels = _blobs(120, num_classes, 32, spread, seed)
    # Offset and scale far from unit so standardisation matters.
    features = features * 7.0 + 3.0
    n_train = 80 * num_classes
    return features[:n_train], labels[:n_train], features[n_train:], labels[n_train:]


# --------------------------------------------------------------------------------------------
# k-NN
# --------------------------------------------------------------------------------------------


def test_knn_scores_match_hand_computation():
    # Bank on the unit circle (scaled, to check the L2 normalisation) at known angles.
    angles_deg = [0.0, 30.0, 60.0, 90.0, 180.0, 270.0]
    bank_labels = torch.tensor([0, 0, 1, 1, 0, 1])
    radii = [1.0, 2.0, 0.5, 3.0, 1.0, 4.0]
    bank = torch.tensor(
        [
            [r * math.cos(math.radians(a)), r * math.sin(math.radians(a))]
            for a, r in zip(angles_deg, radii, strict=True)
        ]
    )
    query_angles = [10.0, 200.0]
    queries = torch.tensor(
        [[5 * math.cos(math.radians(a)), 5 * math.sin(math.radians(a))] for a in query_angles]
    )
    temperature = 0.5
    scores = knn_predict(bank, bank_labels, queries, k=3, temperature=temperature)

    def w(delta_deg: float) -> float:
        return math.exp(math.cos(math.radians(delta_deg)) / temperature)

    # Query at 10 deg: nearest are 0 (d=10, class 0), 30 (d=20, class 0), 60 (d=50, class 1).
    # Query at 200 deg: nearest are 180 (d=20, class 0), 270 (d=70, class 1), 90 (d=110, class 1).
    expected = torch.tensor(
        [
            [w(10) + w(20), w(50)],
            [w(20), w(70) + w(110)],
        ]
    )
    assert scores.shape == (2, 2)
    torch.testing.assert_close(scores, expected.float(), rtol=1e-5, atol=1e-5)

    # k larger than the bank is clamped: every bank point votes.
    all_votes = knn_predict(bank, bank_labels, queries[:1], k=100, temperature=temperature)
    deltas = [abs(10.0 - a) for a in angles_deg]
    class0 = sum(w(d) for d, c in zip(deltas, bank_labels.tolist(), strict=True) if c == 0)
    class1 = sum(w(d) for d, c in zip(deltas, bank_labels.tolist(), strict=True) if c == 1)
    torch.testing.assert_close(all_votes, torch.tensor([[class0, class1]]), rtol=1e-5, atol=1e-5)


def test_knn_matches_numpy_reference_and_chunking():
    generator = torch.Generator().manual_seed(3)
    bank = torch.randn(40, 8, generator=generator)
    labels = torch.randint(0, 4, (40,), generator=generator)
    queries = torch.randn(9, 8, generator=generator)
    k, temperature = 7, 0.2

    b = bank.numpy() / np.linalg.norm(bank.numpy(), axis=1, keepdims=True)
    q = queries.numpy() / np.linalg.norm(queries.numpy(), axis=1, keepdims=True)
    sim = q @ b.T
    expected = np.zeros((9, 5))  # num_classes given as 5: an extra, never-voted class
    for i in range(9):
        for j in np.argsort(-sim[i])[:k]:
            expected[i, labels[j]] += np.exp(sim[i, j] / temperature)

    for chunk_size in (1, 4, 1024):
        scores = knn_predict(
            bank,
            labels,
            queries,
            k=k,
            temperature=temperature,
            num_classes=5,
            chunk_size=chunk_size,
        )
        np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-4)


def test_knn_separable_blobs_near_perfect():
    train_x, train_y, test_x, test_y = _split_blobs()
    result = knn_accuracy(train_x, train_y, test_x, test_y, k=20, temperature=0.1)
    assert result["top1"] > 0.98
    assert result["top5"] >= result["top1"]
    assert result["k"] == 20
    assert result["n_test"] == test_y.numel()


def test_knn_two_classes_has_no_top5_and_k_is_clamped():
    train_x, train_y, test_x, test_y = _split_blobs(num_classes=2)
    result = knn_accuracy(train_x[:10], train_y[:10], test_x, test_y, k=200)
    assert result["top5"] is None
    assert result["k"] == 10


# --------------------------------------------------------------------------------------------
# Linear probe
# --------------------------------------------------------------------------------------------


def test_linear_probe_separable_blobs_near_perfect():
    train_x, train_y, test_x, test_y = _split_blobs()
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
    train_x, train_y, test_x, test_y = _split_blobs(spread=2.0)
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
    train_x, train_y, test_x, test_y = _split_blobs(spread=1.5)
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
    train_x, train_y, test_x, test_y = _split_blobs(spread=1.0)
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
    train_x, train_y, test_x, test_y = _split_blobs(spread=3.0)
    result = linear_probe(
        train_x, train_y, test_x, test_y, learning_rates=(1e-6, 0.1), epochs=1, batch_size=32
    )
    assert result["val_top1_by_lr"][0.1] > result["val_top1_by_lr"][1e-6]
    assert result["learning_rate"] == 0.1


def test_linear_probe_rejects_bad_input():
    train_x, train_y, test_x, test_y = _split_blobs()
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


# --------------------------------------------------------------------------------------------
# Feature extraction
# --------------------------------------------------------------------------------------------


def _images(n: int, side: int = 4, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, side, side), generator=generator, dtype=torch.uint8)


def _normalised(images: torch.Tensor) -> torch.Tensor:
    x = images.float() / 255.0
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_extract_features_normalises_batches_and_restores_mode():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5), nn.Dropout(0.5))
    images = _images(10)
    encoder.train()
    features = extract_features(encoder, images, mean=MEAN, std=STD, batch_size=3)
    assert encoder.training  # restored
    assert features.shape == (10, 5) and features.dtype == torch.float32
    assert features.device.type == "cpu"
    linear = encoder[1]
    expected = _normalised(images).flatten(1) @ linear.weight.T + linear.bias
    # Dropout active would zero about half the outputs: eval mode gives the exact linear map.
    torch.testing.assert_close(features, expected.detach(), rtol=1e-5, atol=1e-5)

    encoder.eval()
    extract_features(encoder, images, mean=MEAN, std=STD)
    assert not encoder.training

    # Float input in [0, 1] is the same as uint8 / 255.
    from_float = extract_features(encoder, images.float() / 255, mean=MEAN, std=STD)
    torch.testing.assert_close(from_float, features)


def test_extract_features_resizes_when_size_differs():
    encoder = nn.Flatten()
    images = _images(4, side=8)
    resized = extract_features(encoder, images, mean=MEAN, std=STD, size=4)
    expected = F.interpolate(
        _normalised(images), size=(4, 4), mode="bilinear", align_corners=False, antialias=True
    )
    assert resized.shape == (4, 3 * 16)
    torch.testing.assert_close(resized, expected.flatten(1), rtol=1e-5, atol=1e-5)
    same = extract_features(encoder, images, mean=MEAN, std=STD, size=8)
    torch.testing.assert_close(same, _normalised(images).flatten(1))


def test_extract_features_uses_batchnorm_running_statistics():
    torch.manual_seed(0)
    encoder = nn.Sequential(
        nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    encoder.train()
    with torch.no_grad():
        for seed in range(5):  # give the running statistics non-trivial values
            encoder(_normalised(_images(16, seed=seed + 10)))
    running_mean = encoder[1].running_mean.clone()
    images = _images(12, seed=1)

    whole = extract_features(encoder, images, mean=MEAN, std=STD, batch_size=12)
    one_by_one = extract_features(encoder, images, mean=MEAN, std=STD, batch_size=1)
    subset = extract_features(encoder, images[:5], mean=MEAN, std=STD)
    torch.testing.assert_close(whole, one_by_one, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(whole[:5], subset, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(encoder[1].running_mean, running_mean)  # not updated
    assert encoder.training
    # Batch statistics would give different numbers: eval mode really was used.
    with torch.no_grad():
        batch_mode = encoder(_normalised(images)).flatten(1)
    assert not torch.allclose(batch_mode, whole, atol=1e-3)


def test_extract_features_rejects_wrong_channel_count():
    with pytest.raises(ConfigError, match="channels"):
        extract_features(nn.Flatten(), _images(2), mean=(0.5,), std=(0.2,))
    with pytest.raises(DataError, match="images"):
        extract_features(nn.Flatten(), torch.zeros(3, 4, 4), mean=MEAN, std=STD)


def test_pixel_features_shape_and_values():
    images = _images(7, side=5)
    pixels = pixel_features(images, mean=MEAN, std=STD, batch_size=3)
    assert pixels.shape == (7, 3 * 5 * 5) and pixels.dtype == torch.float32
    torch.testing.assert_close(pixels, _normalised(images).flatten(1))
    # Pixel 0 of channel 1 of image 2, by hand.
    value = (images[2, 1, 0, 0].item() / 255.0 - MEAN[1]) / STD[1]
    assert pixels[2, 25].item() == pytest.approx(value, rel=1e-5)


# --------------------------------------------------------------------------------------------
# Augmented linear probe
# --------------------------------------------------------------------------------------------


def test_crops_without_room_to_move_are_identity_or_flip():
    images = torch.rand(16, 3, 6, 6)
    generator = torch.Generator().manual_seed(0)
    for out in (
        pad_crop_flip(images, 0, generator),
        # Area 1 with a non-square ratio never fits: the fallback is the whole image.
        random_resized_crop_flip(images, 6, (1.0, 1.0), generator),
    ):
        assert out.shape == images.shape
        same = (out - images).abs().flatten(1).amax(1) < 1e-5
        flipped = (out - images.flip(-1)).abs().flatten(1).amax(1) < 1e-5
        assert bool((same | flipped).all())
        assert 0 < int(flipped.sum()) < 16  # both outcomes occur


def test_pad_crop_shifts_content_and_resized_crop_outputs_size():
    images = torch.rand(32, 3, 8, 8)
    generator = torch.Generator().manual_seed(1)
    shifted = pad_crop_flip(images, 2, generator)
    assert shifted.shape == images.shape
    # Some crops moved the image, uncovering zero padding.
    assert int((shifted.flatten(1) == 0).any(1).sum()) > 0
    cropped = random_resized_crop_flip(images, 5, (0.08, 1.0), generator)
    assert cropped.shape == (32, 3, 5, 5)
    assert float(cropped.min()) >= 0 and float(cropped.max()) <= 1


def test_linear_probe_augmented_on_colour_classes():
    # Class = dominant colour channel; a mean-colour encoder makes it linearly separable under
    # any crop or flip.
    generator = torch.Generator().manual_seed(0)

    def make(n_per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(3).repeat_interleave(n_per_class)
        images = torch.randint(0, 90, (labels.numel(), 3, 8, 8), generator=generator)
        images[torch.arange(labels.numel()), labels] += 160
        return images.to(torch.uint8), labels

    train_images, train_labels = make(20)
    test_images, test_labels = make(10)
    encoder = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    encoder.train()
    for crop in ("resized", "pad"):
        result = linear_probe_augmented(
            encoder,
            train_images,
            train_labels,
            test_images,
            test_labels,
            mean=MEAN,
            std=STD,
            size=8,
            crop=crop,
            epochs=4,
            batch_size=16,
        )
        assert result["top1"] > 0.95, result
        assert result["top5"] is None  # 3 classes
        assert result["learning_rate"] in PAPER_LEARNING_RATES
        assert result["n_val"] == 6 and result["n_test"] == 30 and result["crop"] == crop
        assert len(result["val_top1_by_lr"]) == 5
        assert encoder.training


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def test_format_results_table():
    table = format_results_table(
        [
            {
                "name": "byol",
                "protocol": "linear",
                "top1": 0.92581,
                "top5": 0.998,
                "learning_rate": 0.2,
            },
            {"name": "pixels", "protocol": "k-NN (k=200)", "top1": 0.35, "top5": None},
        ]
    )
    lines = table.strip().splitlines()
    assert lines[0] == "| name | protocol | top-1 (%) | top-5 (%) | lr |"
    assert lines[2] == "| byol | linear | 92.58 | 99.80 | 0.2 |"
    assert lines[3] == "| pixels | k-NN (k=200) | 35.00 | — | — |"
    assert len(lines) == 4
