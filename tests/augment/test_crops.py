"""Crop boxes, resampling, pad-crop-flip and whole-image preparation (byol.augment.crops)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from byol.augment import ViewConfig
from byol.augment.crops import (
    CROP_TRIES,
    CropSampler,
    crop_boxes,
    pad_crop_flip,
    prepare_whole_images,
    random_resized_crop_flip,
)


def test_crops_without_room_to_move_are_identity_or_flip():
    images = torch.rand(16, 3, 6, 6)
    generator = torch.Generator().manual_seed(0)
    for out in (
        pad_crop_flip(images, 0, generator),
        # Area 1 with a non-square ratio never fits: torchvision's fallback is the whole image.
        random_resized_crop_flip(images, 6, (1.0, 1.0), generator, law="torchvision"),
        # The reference law at area 1 and ratio 1: the whole image.
        random_resized_crop_flip(images, 6, (1.0, 1.0), generator, ratio=(1.0, 1.0)),
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


def test_whole_images_are_centre_cropped_on_the_shorter_side():
    wide = torch.rand(2, 3, 10, 20)
    out = prepare_whole_images(wide, 5)
    # Shorter side 10 -> 5: the 10x20 image becomes 5x10, and its centre 5x5 is kept.
    resized = F.interpolate(wide, size=(5, 10), mode="bilinear", antialias=True)
    torch.testing.assert_close(out, resized[..., :, 2:7])
    square = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(
        prepare_whole_images(square, 4),
        F.interpolate(square, size=(4, 4), mode="bilinear", antialias=True),
    )
    assert prepare_whole_images(square, None) is square
    # A crop fraction keeps the centre: 8 px at 0.5 -> the middle 4 px, resized to 2.
    assert prepare_whole_images(square, 2, crop_fraction=0.5).shape[-2:] == (2, 2)


@pytest.mark.parametrize("law", ["reference", "torchvision"])
@pytest.mark.parametrize("h, w", [(375, 500), (500, 375), (28, 28), (16, 64)])
def test_the_loader_sampler_draws_the_boxes_of_crop_boxes(law, h, w):
    # CropSampler (plain floats, per image in the workers) and crop_boxes (batched tensors)
    # are one law: the same uniforms give the same boxes.
    view = ViewConfig(crop_law=law, crop_scale=(0.08, 1.0) if h != 16 else (0.9, 1.0))
    sampler = CropSampler.from_views((view,), seed=3)
    for index in range(200):
        ((box, _),) = sampler.draw(1, index, h, w)
        u = torch.from_numpy(np.random.default_rng((3, 1, index)).random(2 * CROP_TRIES + 3))
        u = u.float()[None]
        expected = crop_boxes(
            u[:, :CROP_TRIES],
            u[:, CROP_TRIES : 2 * CROP_TRIES],
            u[:, 2 * CROP_TRIES],
            u[:, 2 * CROP_TRIES + 1],
            height=h,
            width=w,
            scale=view.crop_scale,
            ratio=view.crop_ratio,
            law=law,
        )[0]
        np.testing.assert_allclose(box, expected.double().numpy(), atol=2e-3 * max(h, w))
