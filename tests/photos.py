"""Folders of real photographs at their own resolution (scikit-image's ``skimage.data``), with the
awkward files users have: an EXIF-rotated JPEG, a CMYK JPEG, a 16-bit PNG, grayscale, a
truncated JPEG and a zero-byte file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

# EXIF orientation 6: the stored image is shown turned 90 degrees clockwise.
ROTATE_CLOCKWISE = 6


def photo(name: str) -> np.ndarray:
    import skimage.data

    return getattr(skimage.data, name)()


def save_jpeg(array: np.ndarray, path: Path, *, mode: str | None = None, exif=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    options = {"quality": 90}
    if exif is not None:
        options["exif"] = exif
    image.save(path, format="JPEG", **options)
    return path


def rotated_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = ROTATE_CLOCKWISE
    return exif


def make_photo_folder(root: Path, *, awkward: bool = True) -> dict[str, Path]:
    """Two class folders of full-resolution photos; returns the interesting files by role."""
    files = {
        "astronaut": save_jpeg(photo("astronaut"), root / "people" / "astronaut.jpg"),
        # Stored 600 x 400, shown 400 x 600 (portrait) once EXIF orientation is applied.
        "rotated": save_jpeg(photo("coffee"), root / "things" / "coffee.jpg", exif=rotated_exif()),
        "cmyk": save_jpeg(photo("rocket"), root / "things" / "rocket.jpg", mode="CMYK"),
        "wide": root / "animals" / "chelsea.png",
        "grayscale": root / "people" / "camera.png",
        "sixteen_bit": root / "things" / "camera16.png",
        "immuno": save_jpeg(photo("immunohistochemistry"), root / "things" / "cells.jpg"),
    }
    files["wide"].parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo("chelsea")).save(files["wide"])
    Image.fromarray(photo("camera")).save(files["grayscale"])
    sixteen = (photo("camera").astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(sixteen).save(files["sixteen_bit"])
    save_jpeg(photo("hubble_deep_field"), root / "animals" / "hubble.jpg")
    if awkward:
        buffer = io.BytesIO()
        Image.fromarray(photo("coffee")).save(buffer, format="JPEG", quality=90)
        files["truncated"] = root / "animals" / "truncated.jpg"
        files["truncated"].write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])
        files["empty"] = root / "animals" / "empty.jpg"
        files["empty"].write_bytes(b"")
    return files
