"""Image folders at full resolution (byol.datasets.folder, decode, streamed): real photographs,
awkward files, crops from the whole image, reproducible workers and the CLI on them."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from byol.augment import ViewConfig
from byol.augment.crops import CropSampler
from byol.cli import main
from byol.data import load_dataset
from byol.datasets.decode import decode_crops, decode_whole, image_header
from byol.errors import DataError
from photos import make_photo_folder, photo


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("photos") / "photos"
    return root, make_photo_folder(root)


@pytest.fixture(scope="module")
def clean_photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clean") / "photos"
    make_photo_folder(root, awkward=False)
    return root


def mean_abs(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean())


def test_headers_give_the_shown_size_and_awkward_files_decode(photos):
    _, files = photos
    # EXIF orientation 6 turns the stored 600 x 400 coffee into a 400 x 600 portrait.
    assert image_header(str(files["rotated"]))[1:] == (400, 600)
    rotated = decode_whole(str(files["rotated"]), 64, "RGB")
    upright = np.asarray(Image.fromarray(photo("coffee")).transpose(Image.Transpose.ROTATE_270))
    expected = decode_whole_array(upright, 64)
    assert mean_abs(rotated, expected) < 6
    # CMYK JPEG -> RGB close to the photo; 16-bit PNG rescaled to 8 bits, not clipped at 255.
    cmyk = decode_whole(str(files["cmyk"]), 64, "RGB")
    assert mean_abs(cmyk, decode_whole_array(photo("rocket"), 64)) < 12
    sixteen = decode_whole(str(files["sixteen_bit"]), 64, "L")
    assert mean_abs(sixteen, decode_whole(str(files["grayscale"]), 64, "L")) < 1.0
    assert sixteen.max() > 200


def decode_whole_array(array: np.ndarray, size: int) -> np.ndarray:
    image = Image.fromarray(array)
    side = min(image.size)
    left, top = (image.size[0] - side) / 2, (image.size[1] - side) / 2
    box = (left, top, left + side, top + side)
    resized = np.asarray(image.resize((size, size), Image.Resampling.BICUBIC, box=box))
    return resized.transpose(2, 0, 1)


def test_a_crop_can_cover_the_sides_of_a_wide_photo(photos):
    _, files = photos
    height, width = 300, 451  # chelsea, stored as a PNG at full resolution
    sampler = CropSampler.from_views((ViewConfig(), ViewConfig()), seed=0)
    boxes = [box for index in range(400) for box, _ in sampler.draw(0, index, height, width)]
    left_edge = (width - height) / 2  # where the centre square would start
    assert any(x0 < left_edge for x0, _, _, _ in boxes)
    assert any(x1 > width - left_edge for _, _, x1, _ in boxes)
    # And the crop holds those pixels: a box on the far left is the photo's left strip.
    strip = (0.0, 0.0, 100.0, 100.0)
    crops = decode_crops(
        str(files["wide"]), 32, "RGB", lambda h, w: [(strip, False), (strip, True)]
    )
    expected = np.asarray(
        Image.fromarray(photo("chelsea")).resize((32, 32), Image.Resampling.BICUBIC, box=strip)
    ).transpose(2, 0, 1)
    np.testing.assert_array_equal(crops[0], expected)
    np.testing.assert_array_equal(crops[1], expected[:, :, ::-1])


def test_a_reduced_jpeg_decode_gives_the_same_crop_as_a_full_one(photos):
    _, files = photos
    # A large box at a small output size lets PIL decode at 1/4 scale: the antialiased result
    # stays within JPEG noise of resizing the fully decoded image.
    box = (20.0, 30.0, 500.0, 510.0)
    reduced = decode_crops(str(files["astronaut"]), 64, "RGB", lambda h, w: [(box, False)])[0]
    with Image.open(files["astronaut"]) as image:
        full = np.asarray(image.convert("RGB").resize((64, 64), Image.Resampling.BICUBIC, box=box))
    assert mean_abs(reduced, full.transpose(2, 0, 1)) < 3


def test_folder_loads_at_full_resolution_naming_the_bad_files(photos):
    root, files = photos
    with pytest.warns(UserWarning, match="skipped 1 unreadable") as caught:
        data = load_dataset(str(root))
    assert str(files["empty"]) in str(caught[0].message)
    assert data.full_resolution and data.channels == 3 and data.classes == [
        "animals", "people", "things"]  # fmt: skip
    with pytest.raises(DataError, match=r"empty\.jpg"):
        load_dataset(str(root), strict=True)
    # The truncated JPEG's header is fine: it is named when it fails to decode.
    sampler = CropSampler.from_views((ViewConfig(), ViewConfig()), seed=1)
    position = data.paths.index(str(files["truncated"]))
    with pytest.warns(UserWarning, match="truncated.jpg"):
        batch = next(data.crop_batches([(0, torch.tensor([position]))], sampler, 48,
                                       num_workers=0))  # fmt: skip
    assert batch.shape == (1, 2, 3, 48, 48) and batch.dtype == torch.uint8


def test_a_decompression_bomb_is_refused_by_name(tmp_path, monkeypatch):
    root = tmp_path / "bombs"
    root.mkdir()
    Image.fromarray(photo("astronaut")).save(root / "big.png")
    Image.fromarray(photo("camera")[:100, :100]).save(root / "small.png")
    # 512 x 512 = 262,144 pixels: 1.3x the limit (PIL would only warn), refused all the same.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200_000)
    with pytest.warns(UserWarning, match="big.png.*decompression bomb"):
        data = load_dataset(str(root))
    assert [Path(p).name for p in data.paths] == ["small.png"]
    with pytest.raises(DataError, match=r"big\.png"):
        load_dataset(str(root), strict=True)


def test_crops_depend_on_seed_epoch_and_index_alone(clean_photos):
    data = load_dataset(str(clean_photos))
    sampler = CropSampler.from_views((ViewConfig(), ViewConfig(crop_law="torchvision")), seed=5)
    keyed = [(0, torch.tensor([3, 1, 4])), (1, torch.tensor([3, 0, 2]))]
    inline = list(data.crop_batches(keyed, sampler, 40, num_workers=0))
    workers = list(data.crop_batches(keyed, sampler, 40, num_workers=2))
    assert all(torch.equal(a, b) for a, b in zip(inline, workers, strict=True))
    # Image 3 is cropped differently in epoch 0 and epoch 1, and its two views differ.
    assert not torch.equal(inline[0][0], inline[1][0])
    assert not torch.equal(inline[0][0, 0], inline[0][0, 1])


def test_train_on_real_photos_at_224_records_the_sizes(clean_photos, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--data", str(clean_photos), "--preset", "imagenet-100", "--image-size",
            "224", "--max-steps", "2", "--batch-size", "4", "--out", str(out),
            "--no-tensorboard", "--num-workers", "0", "--knn-every", "0"]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no upsampling warning: every photo is >= 300 px
        assert main(argv) == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    plan = config["plan"]
    assert plan["view_size"] == 224 and plan["image_size"] == 224
    assert plan["full_resolution"] is True and plan["eval_crop_fraction"] == 0.875
    assert config["folder_image_size"] is None
    assert all(view["crop_law"] == "reference" for view in plan["view_configs"])


def test_views_larger_than_the_folder_thumbnails_are_refused(clean_photos, tmp_path, capsys):
    argv = [
        "train",
        "--data",
        str(clean_photos),
        "--folder-image-size",
        "64",
        "--image-size",
        "224",
        "--max-steps",
        "1",
        "--batch-size",
        "4",
        "--out",
        str(tmp_path / "run"),
    ]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "--image-size 224" in error and "--folder-image-size 64" in error
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_training_crops_resampled_by_torch_match_pil(photos):
    # The loader's crops (whole-pixel boxes, torch's uint8 antialiased bicubic) and PIL's
    # bicubic resize of the same boxes: one filter, within JPEG-invisible differences, both
    # when the crop is shrunk and when it is enlarged.
    _, files = photos
    boxes = [((37.0, 50.0, 437.0, 450.0), False), ((100.0, 100.0, 200.0, 180.0), True)]
    fast = decode_crops(str(files["astronaut"]), 224, "RGB", lambda h, w: boxes,
                        whole_pixels=True)  # fmt: skip
    exact = decode_crops(str(files["astronaut"]), 224, "RGB", lambda h, w: boxes)
    assert fast.shape == exact.shape == (2, 3, 224, 224) and fast.dtype == np.uint8
    assert mean_abs(fast[0], exact[0]) < 0.5 and mean_abs(fast[1], exact[1]) < 0.5


def test_jpeg_decoding_gives_pils_pixels_at_the_reduced_scale(photos):
    # Plain JPEGs are decoded by simplejpeg: the very pixels of PIL's draft decode at the same
    # 1/4 scale (a 400 px box shown at 100 px needs only a quarter of the 512 px stored).
    _, files = photos
    box = (56.0, 56.0, 456.0, 456.0)
    ours = decode_crops(str(files["astronaut"]), 100, "RGB", lambda h, w: [(box, False)])[0]
    with Image.open(files["astronaut"]) as image:
        image.draft("RGB", (128, 128))
        assert image.size == (128, 128)
        quarter = tuple(v / 4 for v in box)
        expected = np.asarray(image.convert("RGB").resize((100, 100), Image.Resampling.BICUBIC,
                                                          box=quarter))  # fmt: skip
    np.testing.assert_array_equal(ours, expected.transpose(2, 0, 1))
