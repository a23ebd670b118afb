"""Dataset sources: fashion-mnist IDX, image folders, numpy files, digits, torchvision sets."""

from __future__ import annotations

import gzip
import pickle
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from byol.data import DATASETS, ImageData, default_pretrain_split, load_dataset
from byol.datasets import fashion_mnist, folder
from byol.errors import ConfigError, DataError

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


# --------------------------------------------------------------------------- fashion-mnist


@pytest.fixture(scope="module")
def debian_fashion_mnist() -> tuple[ImageData, ImageData]:
    if not fashion_mnist.SYSTEM_DIR.is_dir():
        pytest.skip(
            f"{fashion_mnist.SYSTEM_DIR} absent: install Debian's dataset-fashion-mnist package"
        )
    return load_dataset("fashion-mnist"), load_dataset("fashion-mnist", split="test")


def test_fashion_mnist_from_debian_package(debian_fashion_mnist):
    train, test = debian_fashion_mnist
    assert train.images.shape == (60000, 1, 28, 28)
    assert test.images.shape == (10000, 1, 28, 28)
    assert train.images.dtype == torch.uint8 and train.images.is_contiguous()
    assert train.labels.dtype == torch.int64
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot"
    assert (train.channels, train.image_size, len(train)) == (1, (28, 28), 60000)
    assert train.paths is None and train.in_memory


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_tiny_idx(directory: Path, n_train: int = 7, n_test: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        if stem.startswith("train"):  # gzipped like the upstream files
            (directory / f"{stem}.gz").write_bytes(gzip.compress(_idx_bytes(array)))
        else:  # plain files are accepted too
            (directory / stem).write_bytes(_idx_bytes(array))
    return arrays


def test_fashion_mnist_tiny_idx_from_root(tmp_path):
    arrays = _write_tiny_idx(tmp_path)
    train = load_dataset("fashion-mnist", root=tmp_path)
    test = load_dataset("Fashion_MNIST", root=tmp_path, split="test")
    assert train.images.shape == (7, 1, 28, 28) and test.images.shape == (3, 1, 28, 28)
    np.testing.assert_array_equal(train.images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(train.labels.numpy(), arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(test.images[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert len(train.classes) == 10


def test_fashion_mnist_truncated_and_bad_magic_name_the_file(tmp_path):
    _write_tiny_idx(tmp_path)
    images_gz = tmp_path / "train-images-idx3-ubyte.gz"
    full = gzip.decompress(images_gz.read_bytes())
    images_gz.write_bytes(gzip.compress(full[:-100]))  # valid gzip, data cut short
    with pytest.raises(DataError, match="truncated") as error:
        load_dataset("fashion-mnist", root=tmp_path)
    assert str(images_gz) in str(error.value)

    images_gz.write_bytes(gzip.compress(full)[:200])  # the gzip stream itself cut short
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz"):
        load_dataset("fashion-mnist", root=tmp_path)

    labels = tmp_path / "t10k-labels-idx1-ubyte"
    labels.write_bytes(b"\x00\x00\x08\x03" + labels.read_bytes()[4:])  # 3 dims, not 1
    with pytest.raises(DataError, match="not an IDX file") as error:
        load_dataset("fashion-mnist", root=tmp_path, split="test")
    assert str(labels) in str(error.value)


def test_fashion_mnist_missing_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "no-such-dir")
    with pytest.raises(DataError) as error:
        load_dataset("fashion-mnist", root=tmp_path)
    message = str(error.value)
    assert str(tmp_path) in message and "no-such-dir" in message
    assert "apt-get install dataset-fashion-mnist" in message and "--data-root" in message
    with pytest.raises(ConfigError, match="train or test"):
        load_dataset("fashion-mnist", root=tmp_path, split="unlabeled")


# --------------------------------------------------------------------------- image folders


def _stripes(width: int, height: int, colours: list[tuple[int, int, int]]) -> Image.Image:
    """Vertical stripes of equal width, one per colour."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    for i, colour in enumerate(colours):
        array[:, i * width // len(colours) : (i + 1) * width // len(colours)] = colour
    return Image.fromarray(array)


def _save(image: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else None)
    return path


@pytest.fixture
def labeled_folder(tmp_path) -> Path:
    root = tmp_path / "pets"
    # Wide RGB stripes: the centre crop must keep only the middle (green) stripe.
    _save(_stripes(60, 20, [RED, GREEN, BLUE]), root / "cat" / "b.png")
    _save(Image.new("L", (20, 50), 77), root / "cat" / "a.jpg")
    _save(Image.new("RGBA", (64, 64), (10, 20, 30, 255)), root / "dog" / "c.PNG")
    _save(Image.new("RGB", (33, 40), BLUE), root / "dog" / "d.JPEG")
    # A palette image with its palette written out: Pillow 12.3 cannot read back a BMP of
    # a "P" image with an empty palette (seen on the GPU machine's image).
    palette = Image.new("P", (12, 12))
    palette.putpalette([value for grey in range(256) for value in (grey, grey, grey)])
    _save(palette, root / "dog" / "e.bmp")
    (root / "dog" / "notes.txt").write_text("not an image")
    _save(Image.new("RGB", (8, 8)), root / "dog" / ".hidden.png")
    return root


def test_labeled_folder(labeled_folder):
    data = load_dataset(str(labeled_folder), image_size=16)
    assert data.images.shape == (5, 3, 16, 16) and data.images.dtype == torch.uint8
    assert data.classes == ["cat", "dog"]
    assert data.labels.tolist() == [0, 0, 1, 1, 1]
    names = [Path(p).relative_to(labeled_folder).as_posix() for p in data.paths]
    assert names == ["cat/a.jpg", "cat/b.png", "dog/c.PNG", "dog/d.JPEG", "dog/e.bmp"]
    stripes = data.images[1]
    assert stripes[:, 3:13, 3:13].eq(torch.tensor(GREEN, dtype=torch.uint8)[:, None, None]).all()
    assert data.images[2].eq(torch.tensor([10, 20, 30], dtype=torch.uint8)[:, None, None]).all()
    # A JPEG of one grey level stays (close to) that grey in all three channels.
    assert (data.images[0].int() - 77).abs().max() <= 2
    assert data.images[3, 2].float().mean() > 240 and data.images[3, 0].float().mean() < 15


def test_folder_default_is_full_resolution_and_streamed(labeled_folder):
    data = load_dataset(str(labeled_folder))
    assert data.full_resolution and data.image_size is None and data.images is None
    assert data.typical_side() == 20  # the files' median shorter side
    with pytest.raises(DataError, match="at_size"):
        data.get(torch.arange(2))
    # Shown whole at a fixed size (small images upscale), as evaluation does.
    assert data.at_size(64).get(torch.arange(5)).shape == (5, 3, 64, 64)


def test_unlabeled_flat_and_nested_folders(tmp_path):
    flat = tmp_path / "flat"
    for i, size in enumerate([(10, 10), (30, 12), (7, 25)]):
        _save(Image.new("RGB", size, (i * 50, 0, 0)), flat / f"img{i}.png")
    data = load_dataset(str(flat), image_size=8)
    assert data.labels is None and data.classes is None
    assert data.images.shape == (3, 3, 8, 8)
    assert data.images[:, 0, 4, 4].tolist() == [0, 50, 100]

    nested = tmp_path / "nested"
    _save(Image.new("RGB", (9, 9)), nested / "top.png")
    _save(Image.new("RGB", (9, 9)), nested / "a" / "x.jpg")
    _save(Image.new("RGB", (9, 9)), nested / "a" / "b" / "y.webp")
    data = load_dataset(str(nested), image_size=8)
    assert data.labels is None and data.classes is None and len(data) == 3
    names = [Path(p).relative_to(nested).as_posix() for p in data.paths]
    assert names == ["a/b/y.webp", "a/x.jpg", "top.png"]

    single = tmp_path / "single"  # one class folder only: no labels to learn from
    _save(Image.new("RGB", (9, 9)), single / "only" / "x.png")
    _save(Image.new("RGB", (9, 9)), single / "only" / "y.png")
    assert load_dataset(str(single), image_size=8).labels is None


def test_grayscale_folder_stays_one_channel(tmp_path):
    root = tmp_path / "gray"
    _save(Image.new("L", (20, 20), 200), root / "a.png")
    _save(Image.new("L", (40, 30), 90), root / "b.jpg")
    _save(Image.new("1", (16, 16), 1), root / "c.png")
    data = load_dataset(str(root), image_size=12)
    assert data.images.shape == (3, 1, 12, 12)
    assert data.images[0].eq(200).all() and data.images[2].eq(255).all()
    assert (data.images[1].int() - 90).abs().max() <= 2


def _corrupt_folder(root: Path) -> tuple[Path, Path]:
    for name in ("a.png", "c.png", "e.png"):
        _save(Image.new("RGB", (16, 16), GREEN), root / name)
    garbage = root / "b.png"
    garbage.write_bytes(b"this is not an image at all")
    truncated = root / "d.png"
    _save(
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)), truncated
    )
    truncated.write_bytes(truncated.read_bytes()[:300])  # header intact, pixel data cut
    return garbage, truncated


def test_corrupt_files_skipped_with_one_warning_or_strict_error(tmp_path):
    root = tmp_path / "broken"
    garbage, truncated = _corrupt_folder(root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset(str(root), image_size=8)
    messages = [str(w.message) for w in caught if "unreadable" in str(w.message)]
    assert len(messages) == 1
    assert "skipped 2 unreadable" in messages[0]
    assert str(garbage) in messages[0] and str(truncated) in messages[0]
    assert [Path(p).name for p in data.paths] == ["a.png", "c.png", "e.png"]
    assert data.images.shape == (3, 3, 8, 8)

    with pytest.raises(DataError, match="unreadable image file") as error:
        load_dataset(str(root), image_size=8, strict=True)
    assert str(garbage) in str(error.value)


def test_streamed_folder_reports_a_file_that_fails_to_decode(tmp_path):
    root = tmp_path / "broken"
    _, truncated = _corrupt_folder(root)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        data = load_dataset(str(root), image_size=8, in_memory=False)
    assert len(data) == 4  # only the header-less file is caught before decoding
    position = data.paths.index(str(truncated))
    # Streaming, a file that fails to decode is named once and the next image used instead.
    with pytest.warns(UserWarning, match="cannot decode image") as caught:
        images = data.get(torch.arange(4))
    assert str(truncated) in str(caught[0].message)
    assert torch.equal(images[position], images[(position + 1) % 4])
    (root / "b.png").unlink()  # the header-less file, which strict refuses at load
    strict = load_dataset(str(root), image_size=8, in_memory=False, strict=True)
    with pytest.raises(DataError, match="unreadable image file") as error:
        strict.get(torch.arange(4))
    assert str(truncated) in str(error.value)


def test_empty_folder_errors_name_the_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no image files") as error:
        load_dataset(str(empty))
    assert str(empty) in str(error.value)
    (empty / "readme.txt").write_text("hello")
    with pytest.raises(DataError, match="no image files"):
        load_dataset(str(empty))


def test_folder_train_test_subfolders_pick_the_split(tmp_path):
    root = tmp_path / "split"
    for split, count in (("train", 3), ("test", 2)):
        for i in range(count):
            for cls in ("x", "y"):
                _save(Image.new("RGB", (8, 8)), root / split / cls / f"{i}.png")
    assert len(load_dataset(str(root), image_size=8)) == 6
    test = load_dataset(str(root), split="test", image_size=8)
    assert len(test) == 4 and test.classes == ["x", "y"]
    assert len(load_dataset(str(root), split="val", image_size=8)) == 4  # val falls back to test

    plain = tmp_path / "plain"
    _save(Image.new("RGB", (8, 8)), plain / "a.png")
    with pytest.raises(DataError, match="only the split 'train'"):
        load_dataset(str(plain), split="test")


def test_streamed_folder_matches_in_memory(labeled_folder, monkeypatch):
    memory = load_dataset(str(labeled_folder), image_size=16)
    monkeypatch.setattr(folder, "IN_MEMORY_LIMIT_BYTES", 100)  # auto mode must now stream
    streamed = load_dataset(str(labeled_folder), image_size=16)
    assert streamed.images is None and not streamed.in_memory
    assert load_dataset(str(labeled_folder), image_size=16, in_memory=False).images is None
    assert (len(streamed), streamed.channels, streamed.image_size) == (5, 3, (16, 16))
    assert streamed.paths == memory.paths and streamed.classes == memory.classes
    assert torch.equal(streamed.labels, memory.labels)

    order = [torch.tensor([3, 0]), torch.tensor([1, 2, 4]), torch.tensor([4])]
    for workers in (0, 2):
        batches = list(streamed.batches(iter(order), num_workers=workers))
        assert len(batches) == 3
        for index, batch in zip(order, batches, strict=True):
            assert batch.dtype == torch.uint8
            assert torch.equal(batch, memory.images[index])
    assert torch.equal(streamed.get(torch.tensor([2, 2, 0])), memory.images[[2, 2, 0]])
    part = streamed.subset([4, 1])
    assert torch.equal(part.get(torch.arange(2)), memory.images[[4, 1]])
    assert part.labels.tolist() == [1, 0] and part.paths == [memory.paths[4], memory.paths[1]]
    np.testing.assert_allclose(streamed.mean_std(), memory.mean_std(), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- numpy files


def test_npy_nhw_and_nhwc_with_sibling_labels(tmp_path):
    rng = np.random.default_rng(2)
    nhw = rng.integers(0, 256, (5, 6, 7), dtype=np.uint8)
    np.save(tmp_path / "gray.npy", nhw)
    data = load_dataset(str(tmp_path / "gray.npy"))
    assert data.images.shape == (5, 1, 6, 7) and data.labels is None
    np.testing.assert_array_equal(data.images[:, 0].numpy(), nhw)

    nhwc = rng.integers(0, 256, (4, 9, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "colour.npy", nhwc)
    np.save(tmp_path / "colour_labels.npy", np.array([2, 0, 1, 2]))
    data = load_dataset(str(tmp_path / "colour.npy"))
    assert data.images.shape == (4, 3, 9, 8) and data.images.is_contiguous()
    np.testing.assert_array_equal(data.images.numpy(), nhwc.transpose(0, 3, 1, 2))
    assert data.labels.tolist() == [2, 0, 1, 2] and data.classes == ["0", "1", "2"]

    nchw = rng.integers(0, 256, (2, 3, 5, 5), dtype=np.uint8)
    sub = tmp_path / "sub"
    sub.mkdir()
    np.save(sub / "images.npy", nchw)
    np.save(sub / "labels.npy", np.array([1, 0]))
    data = load_dataset(str(sub / "images.npy"))
    np.testing.assert_array_equal(data.images.numpy(), nchw)
    assert data.labels.tolist() == [1, 0]


def test_npz_with_labels_and_classes(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (6, 10, 10, 3), dtype=np.uint8)
    y = np.array([0, 1, 1, 0, -1, 1])
    np.savez(tmp_path / "set.npz", x=x, y=y, classes=np.array(["ant", "bee"]))
    data = load_dataset(str(tmp_path / "set.npz"))
    np.testing.assert_array_equal(data.images.numpy(), x.transpose(0, 3, 1, 2))
    assert data.labels.tolist() == [0, 1, 1, 0, -1, 1] and data.classes == ["ant", "bee"]

    np.savez_compressed(tmp_path / "plain.npz", images=x[:, :, :, 0])
    data = load_dataset(str(tmp_path / "plain.npz"))
    assert data.images.shape == (6, 1, 10, 10) and data.labels is None


def test_numpy_file_errors_name_file_and_shape(tmp_path):
    floats = tmp_path / "floats.npy"
    np.save(floats, np.zeros((3, 8, 8), dtype=np.float32))
    with pytest.raises(DataError, match=r"uint8, got float32 with shape \(3, 8, 8\)") as error:
        load_dataset(str(floats))
    assert str(floats) in str(error.value)

    four_channels = tmp_path / "rgba.npy"
    np.save(four_channels, np.zeros((3, 8, 8, 4), dtype=np.uint8))
    with pytest.raises(DataError, match=r"\(3, 8, 8, 4\)"):
        load_dataset(str(four_channels))

    np.savez(tmp_path / "nokey.npz", pictures=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match=r"no 'images' or 'x' array.*pictures"):
        load_dataset(str(tmp_path / "nokey.npz"))

    np.savez(tmp_path / "badlabels.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.zeros(3, int))
    with pytest.raises(DataError, match="labels must be 2 integers"):
        load_dataset(str(tmp_path / "badlabels.npz"))

    (tmp_path / "image.txt").write_text("x")
    with pytest.raises(DataError, match=r"not a \.npy or \.npz"):
        load_dataset(str(tmp_path / "image.txt"))


# --------------------------------------------------------------------------- digits, names


def test_digits_split():
    train, test = load_dataset("digits"), load_dataset("digits", split="test")
    assert train.images.shape == (1437, 1, 8, 8) and test.images.shape == (360, 1, 8, 8)
    assert train.images.dtype == torch.uint8 and int(train.images.max()) == 255
    assert set(train.labels.tolist()) == set(range(10)) and train.labels.dtype == torch.int64
    from sklearn.datasets import load_digits

    reference = load_digits()
    order = np.sort(np.random.default_rng(0).permutation(1797)[:1437])
    expected = np.rint(reference.images[order] * 255 / 16).astype(np.uint8)
    np.testing.assert_array_equal(train.images[:, 0].numpy(), expected)
    np.testing.assert_array_equal(train.labels.numpy(), reference.target[order])


def test_unknown_name_lists_sources(tmp_path):
    with pytest.raises(DataError) as error:
        load_dataset("imagenet-tiny")
    message = str(error.value)
    assert all(name in message for name in DATASETS) and "folder" in message and ".npz" in message
    with pytest.raises(ConfigError, match="image_size"):
        load_dataset("digits", image_size=0)


def test_default_pretrain_split():
    assert default_pretrain_split("stl10") == "train+unlabeled"
    assert [default_pretrain_split(n) for n in ("cifar10", "fashion-mnist", "/x")] == ["train"] * 3


# --------------------------------------------------------------------------- torchvision


@pytest.mark.parametrize(
    ("name", "folder_name", "a_file"),
    [
        ("cifar10", "cifar-10-batches-py", "data_batch_1"),
        ("cifar100", "cifar-100-python", "meta"),
        ("stl10", "stl10_binary", "unlabeled_X.bin"),
    ],
)
def test_torchvision_sources_missing(tmp_path, name, folder_name, a_file):
    with pytest.raises(DataError) as error:
        load_dataset(name, root=tmp_path)
    message = str(error.value)
    assert str(tmp_path / folder_name) in message and a_file in message
    assert "--download" in message


def _write_fake_cifar10(root: Path, per_batch: int = 4) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(4)
    folder_path = root / "cifar-10-batches-py"
    folder_path.mkdir(parents=True)
    train_data, train_labels = [], []
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        with open(folder_path / name, "wb") as handle:
            pickle.dump({"data": data, "labels": labels}, handle)
        if name != "test_batch":
            train_data.append(data)
            train_labels += labels
    names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    with open(folder_path / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": names}, handle)
    return np.concatenate(train_data).reshape(-1, 3, 32, 32), train_labels


def test_fake_cifar10_loads(tmp_path, monkeypatch):
    from torchvision.datasets import cifar

    images, labels = _write_fake_cifar10(tmp_path)
    # The fake files cannot match torchvision's MD5s, so a checksum mismatch is reported...
    with pytest.raises(DataError, match="incomplete or corrupt"):
        load_dataset("cifar10", root=tmp_path)
    # ...and with the checks switched off the files load.
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    data = load_dataset("cifar10", root=tmp_path / "cifar-10-batches-py")  # folder itself works
    assert data.images.shape == (20, 3, 32, 32) and data.images.is_contiguous()
    np.testing.assert_array_equal(data.images.numpy(), images)
    assert data.labels.tolist() == labels and data.classes[1] == "automobile"
    assert len(load_dataset("CIFAR-10", root=tmp_path, split="test")) == 4
    with pytest.raises(ConfigError, match="train, test"):
        load_dataset("cifar10", root=tmp_path, split="unlabeled")


# --------------------------------------------------------------------------- ImageData API


def test_get_subset_batches_mean_std_match_numpy(tmp_path):
    rng = np.random.default_rng(5)
    array = rng.integers(0, 256, (50, 3, 6, 5), dtype=np.uint8)
    np.save(tmp_path / "x.npy", array)
    np.save(tmp_path / "x_labels.npy", np.arange(50) % 4)
    data = load_dataset(str(tmp_path / "x.npy"))

    index = torch.tensor([7, 0, 49, 7])
    np.testing.assert_array_equal(data.get(index).numpy(), array[[7, 0, 49, 7]])
    part = data.subset(np.array([3, 10, 11]))
    assert len(part) == 3 and part.labels.tolist() == [3, 2, 3]
    np.testing.assert_array_equal(part.images.numpy(), array[[3, 10, 11]])
    batches = list(data.batches([torch.tensor([1, 2]), torch.tensor([5])]))
    np.testing.assert_array_equal(batches[1].numpy(), array[[5]])

    mean, std = data.mean_std()
    scaled = array.astype(np.float64) / 255.0
    np.testing.assert_allclose(mean, scaled.mean(axis=(0, 2, 3)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(std, scaled.std(axis=(0, 2, 3)), rtol=0, atol=1e-12)
    sub_mean, _ = part.mean_std()
    np.testing.assert_allclose(sub_mean, scaled[[3, 10, 11]].mean(axis=(0, 2, 3)), atol=1e-12)


def test_streamed_mean_std_uses_a_fixed_sample(tmp_path, monkeypatch):
    from byol.datasets import base

    root = tmp_path / "many"
    values = list(range(0, 250, 10))
    for i, value in enumerate(values):
        _save(Image.new("L", (4, 4), value), root / f"{i:02d}.png")
    monkeypatch.setattr(base, "MEAN_STD_SAMPLE", 10)
    data = load_dataset(str(root), image_size=4, in_memory=False)
    mean, std = data.mean_std()
    sample = torch.randperm(25, generator=torch.Generator().manual_seed(0))[:10]
    expected = np.array(values)[sample.numpy()] / 255.0
    assert mean[0] == pytest.approx(expected.mean(), abs=1e-12)
    assert std[0] == pytest.approx(expected.std(), abs=1e-12)
