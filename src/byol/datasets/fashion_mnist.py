"""Fashion-MNIST from its IDX files, read directly with numpy.

The files are looked up (gzipped or not) in ``root``, ``root/fashion-mnist`` and
``root/FashionMNIST/raw`` when a root is given, then in :data:`SYSTEM_DIR`, where Debian's
``dataset-fashion-mnist`` package puts them. torchvision's FashionMNIST class is not used
because it insists on the upstream checksums, which Debian's re-compressed files do not match.
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import torch

from byol.datasets.base import ImageData
from byol.errors import ConfigError, DataError

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_UBYTE = 0x08


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes with ``ndim`` dimensions (gzipped if ``.gz``)."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                raw = handle.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read IDX file {path}: {error} (truncated or corrupt?)") from error
    header_bytes = 4 + 4 * ndim
    if len(raw) < header_bytes or raw[:4] != bytes([0, 0, _IDX_UBYTE, ndim]):
        raise DataError(
            f"{path} is not an IDX file of unsigned bytes with {ndim} dimension(s) "
            f"(magic bytes {raw[:4].hex() or 'missing'}, expected 000008{ndim:02x})"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header_bytes])
    expected = math.prod(dims)
    if len(raw) - header_bytes != expected:
        raise DataError(
            f"IDX file {path} is truncated or has extra bytes: its header promises shape "
            f"{dims} = {expected} bytes of data, the file holds {len(raw) - header_bytes}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_bytes).reshape(dims)


def _find(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def search_dirs(root: Path | None) -> list[Path]:
    """Folders searched for the IDX files, in order."""
    if root is None:
        return [SYSTEM_DIR]
    return [root, root / "fashion-mnist", root / "FashionMNIST" / "raw", SYSTEM_DIR]


def load_fashion_mnist(root: Path | None, split: str) -> ImageData:
    """Fashion-MNIST ``train`` (60,000) or ``test`` (10,000): 1 x 28 x 28 uint8, 10 classes."""
    if split not in FILES:
        raise ConfigError(f"unknown split {split!r} for fashion-mnist: use train or test")
    image_stem, label_stem = FILES[split]
    dirs = search_dirs(root)
    for directory in dirs:
        image_file, label_file = _find(directory, image_stem), _find(directory, label_stem)
        if image_file is not None and label_file is not None:
            break
    else:
        raise DataError(
            f"fashion-mnist {split} files {image_stem}(.gz) and {label_stem}(.gz) not found in "
            f"{', '.join(str(d) for d in dirs)}. Install them with "
            "'apt-get install dataset-fashion-mnist', or pass --data-root pointing to a folder "
            "with train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
            "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz."
        )
    images = read_idx(image_file, 3)
    labels = read_idx(label_file, 1)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{image_file} holds {images.shape[0]} images but {label_file} holds "
            f"{labels.shape[0]} labels"
        )
    if labels.size and labels.max() >= len(CLASSES):
        raise DataError(f"{label_file} has label {labels.max()}, expected 0..{len(CLASSES) - 1}")
    n, height, width = images.shape
    image_tensor = torch.from_numpy(images.reshape(n, 1, height, width).copy())
    label_tensor = torch.from_numpy(labels.astype(np.int64))
    return ImageData("fashion-mnist", image_tensor, label_tensor, list(CLASSES))
