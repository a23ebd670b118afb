"""Frozen-encoder features and raw pixels (byol.evaluate.features)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from byol.errors import ConfigError, DataError
from byol.evaluate import (
    extract_features,
    pixel_features,
)

from .helpers import MEAN, STD, make_images, normalised


def test_extract_features_normalises_batches_and_restores_mode():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5), nn.Dropout(0.5))
    images = make_images(10)
    encoder.train()
    features = extract_features(encoder, images, mean=MEAN, std=STD, batch_size=3)
    assert encoder.training  # restored
    assert features.shape == (10, 5) and features.dtype == torch.float32
    assert features.device.type == "cpu"
    linear = encoder[1]
    expected = normalised(images).flatten(1) @ linear.weight.T + linear.bias
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
    images = make_images(4, side=8)
    resized = extract_features(encoder, images, mean=MEAN, std=STD, size=4)
    expected = F.interpolate(
        normalised(images), size=(4, 4), mode="bilinear", align_corners=False, antialias=True
    )
    assert resized.shape == (4, 3 * 16)
    torch.testing.assert_close(resized, expected.flatten(1), rtol=1e-5, atol=1e-5)
    same = extract_features(encoder, images, mean=MEAN, std=STD, size=8)
    torch.testing.assert_close(same, normalised(images).flatten(1))


def test_extract_features_uses_batchnorm_running_statistics():
    torch.manual_seed(0)
    encoder = nn.Sequential(
        nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    encoder.train()
    with torch.no_grad():
        for seed in range(5):  # give the running statistics non-trivial values
            encoder(normalised(make_images(16, seed=seed + 10)))
    running_mean = encoder[1].running_mean.clone()
    images = make_images(12, seed=1)

    whole = extract_features(encoder, images, mean=MEAN, std=STD, batch_size=12)
    one_by_one = extract_features(encoder, images, mean=MEAN, std=STD, batch_size=1)
    subset = extract_features(encoder, images[:5], mean=MEAN, std=STD)
    torch.testing.assert_close(whole, one_by_one, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(whole[:5], subset, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(encoder[1].running_mean, running_mean)  # not updated
    assert encoder.training
    # Batch statistics would give different numbers: eval mode really was used.
    with torch.no_grad():
        batch_mode = encoder(normalised(images)).flatten(1)
    assert not torch.allclose(batch_mode, whole, atol=1e-3)


def test_extract_features_rejects_wrong_channel_count():
    with pytest.raises(ConfigError, match="channels"):
        extract_features(nn.Flatten(), make_images(2), mean=(0.5,), std=(0.2,))
    with pytest.raises(DataError, match="images"):
        extract_features(nn.Flatten(), torch.zeros(3, 4, 4), mean=MEAN, std=STD)


def test_pixel_features_shape_and_values():
    images = make_images(7, side=5)
    pixels = pixel_features(images, mean=MEAN, std=STD, batch_size=3)
    assert pixels.shape == (7, 3 * 5 * 5) and pixels.dtype == torch.float32
    torch.testing.assert_close(pixels, normalised(images).flatten(1))
    # Pixel 0 of channel 1 of image 2, by hand.
    value = (images[2, 1, 0, 0].item() / 255.0 - MEAN[1]) / STD[1]
    assert pixels[2, 25].item() == pytest.approx(value, rel=1e-5)
