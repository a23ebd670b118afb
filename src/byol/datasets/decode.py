"""Decoding one image file to uint8 arrays: the whole image at a fixed size, or training crops.

Two geometries, both computed by PIL on the CPU (in DataLoader workers when streaming):

* :func:`decode_whole` - how a stored image is shown whole: the centre square of
  ``crop_fraction`` of the shorter side (the reference's 224/256 = 0.875 for evaluation; 1.0,
  the whole square, for thumbnails), resized (bicubic, antialiased) to ``size`` x ``size``.
* :func:`decode_crops` - the training crops of one image: boxes drawn on the **full** decoded
  image (a :class:`byol.augment.crops.CropSampler` gives them), each resized (bicubic,
  antialiased: torch's uint8 kernel, PIL's filter) to the view size and flipped where drawn.

Both decode a JPEG at the smallest of its 1/1, 1/2, 1/4, 1/8 scales that still covers what
is cut from it at the output size, so no output pixel is made from fewer stored pixels than a
full decode would give. Plain RGB and grayscale JPEGs without EXIF rotation are decoded by
simplejpeg (libjpeg-turbo; the same pixels as PIL's ``draft`` decode, about 1.2x faster on a
500 x 375 photo: benchmarks/RESULTS.md), everything else by PIL. Every image is converted to
RGB (or 8-bit grayscale), EXIF orientation applied, 16-bit images rescaled to 8 bits.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

try:  # a faster JPEG decoder (libjpeg-turbo), used where it gives PIL's very pixels
    import simplejpeg
except ImportError:  # pragma: no cover - a dependency; PIL decodes everything without it
    simplejpeg = None

__all__ = ["GRAYSCALE_MODES", "decode_crops", "decode_whole", "image_header", "open_image"]

GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
# EXIF orientations that rotate by 90 degrees, so that the stored width is the shown height.
_TRANSPOSED_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION = 0x0112

#: Where an image comes from: a file path, or its bytes (a member of a tar shard).
Source = str | Path | bytes

Boxes = list[tuple[tuple[float, float, float, float], bool]]


def open_image(source: Source) -> Image.Image:
    """``Image.open`` on a path or bytes; a decompression bomb raises instead of warning."""
    stream: str | Path | BinaryIO = io.BytesIO(source) if isinstance(source, bytes) else source
    with warnings.catch_warnings():
        # PIL warns between MAX_IMAGE_PIXELS and twice that and raises above; refuse both.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(stream)
        except Image.DecompressionBombWarning as warning:
            raise Image.DecompressionBombError(f"decompression bomb: {warning}") from None


def image_header(source: Source) -> tuple[str, int, int]:
    """(mode, width, height) as the image will be shown (EXIF orientation applied), read from
    the header only."""
    with open_image(source) as image:
        width, height = image.size
        if _orientation(image) in _TRANSPOSED_ORIENTATIONS:
            width, height = height, width
        return image.mode, width, height


def decode_whole(source: Source, size: int, mode: str, crop_fraction: float = 1.0) -> np.ndarray:
    """The image as a uint8 ``(C, size, size)`` array in ``mode`` ("L" or "RGB"): the centre
    square of ``crop_fraction`` of its shorter side, resized to ``size``."""

    def centre_box(height: int, width: int) -> Boxes:
        side = min(width, height) * crop_fraction
        left, top = (width - side) / 2, (height - side) / 2
        return [((left, top, left + side, top + side), False)]

    return decode_crops(source, size, mode, centre_box)[0]


def decode_crops(
    source: Source,
    size: int,
    mode: str,
    boxes_for: Callable[[int, int], Boxes],
    *,
    whole_pixels: bool = False,
) -> np.ndarray:
    """Crops of one image as a uint8 ``(V, C, size, size)`` array.

    ``boxes_for(height, width)`` gets the size of the image as shown (EXIF orientation
    applied) and returns each crop's box ``(x0, y0, x1, y1)`` in those pixels and whether to
    flip it horizontally. PIL resamples the exact (sub-pixel) boxes; with ``whole_pixels`` the
    boxes are rounded to whole decoded pixels and resampled by torch's uint8 antialiased
    bicubic kernel, the same filter as PIL's within about one grey level and faster (3.2 against
    6.0 ms for an image's decode and two 224 px crops, benchmarks/RESULTS.md): the training
    crops use it, the reference law's boxes are whole pixels anyway.
    """
    with open_image(source) as stored:
        stored_w, stored_h = stored.size
        transposed = _orientation(stored) in _TRANSPOSED_ORIENTATIONS
        width, height = (stored_h, stored_w) if transposed else (stored_w, stored_h)
        boxes = boxes_for(height, width)
        # The decode scale that still gives every box at least ``size`` pixels a side.
        smallest_side = min(min(x1 - x0, y1 - y0) for (x0, y0, x1, y1), _ in boxes)
        scale = min(1.0, size / max(smallest_side, 1e-6))
        needed = (math.ceil(stored_w * scale), math.ceil(stored_h * scale))
        decoded = None
        if simplejpeg is not None and stored.format == "JPEG" and not transposed:
            decoded = _fast_jpeg(source, stored, mode, needed)
        if decoded is None:
            stored.draft(mode, needed)
            image = _as_mode(ImageOps.exif_transpose(stored), mode)
        else:
            image = Image.fromarray(decoded) if not whole_pixels else None
        decoded_w, decoded_h = image.size if decoded is None else decoded.shape[1::-1]
        scale_x, scale_y = decoded_w / width, decoded_h / height
        if whole_pixels:
            pixels = torch.from_numpy(decoded if decoded is not None
                                      else np.array(image, dtype=np.uint8))  # fmt: skip
            # (1, C, H, W) with channels-last strides: the layout of torch's fast uint8 kernel.
            pixels = pixels[None, None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)[None]
            crops = [_resize_box(pixels, box, scale_x, scale_y, size, flip)
                     for box, flip in boxes]  # fmt: skip
            return torch.cat(crops).numpy()
        crops = []
        for (x0, y0, x1, y1), flip in boxes:
            box = (x0 * scale_x, y0 * scale_y, x1 * scale_x, y1 * scale_y)
            crop = image.resize((size, size), Image.Resampling.BICUBIC, box=box)
            if flip:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            crops.append(np.asarray(crop, dtype=np.uint8))
    stacked = np.stack(crops)
    return (
        stacked[:, None]
        if stacked.ndim == 3
        else np.ascontiguousarray(stacked.transpose(0, 3, 1, 2))
    )


def _resize_box(
    pixels: torch.Tensor,
    box: tuple[float, float, float, float],
    scale_x: float,
    scale_y: float,
    size: int,
    flip: bool,
) -> torch.Tensor:
    """One crop of ``pixels`` (``box`` in shown-image pixels, scaled to the decoded ones),
    resized to ``size`` with torch's antialiased bicubic and flipped if asked."""
    height, width = pixels.shape[2], pixels.shape[3]
    x0 = min(max(round(box[0] * scale_x), 0), width - 1)
    y0 = min(max(round(box[1] * scale_y), 0), height - 1)
    x1 = min(max(round(box[2] * scale_x), x0 + 1), width)
    y1 = min(max(round(box[3] * scale_y), y0 + 1), height)
    crop = pixels[:, :, y0:y1, x0:x1].contiguous(memory_format=torch.channels_last)
    out = F.interpolate(crop, size=(size, size), mode="bicubic", antialias=True)
    return (out.flip(-1) if flip else out).contiguous()


def _fast_jpeg(
    source: Source, stored: Image.Image, mode: str, needed: tuple[int, int]
) -> np.ndarray | None:
    """The JPEG decoded by simplejpeg at the smallest 1/2^k scale of at least ``needed`` (the
    scale PIL's ``draft`` picks, the same pixels), as ``(H, W, 3)`` or ``(H, W)``; None where
    PIL must do it (CMYK and other colour spaces, a grey file in a colour set, or data
    simplejpeg refuses, which PIL then decodes or reports)."""
    if stored.mode not in ("RGB", "L") or (mode == "RGB") != (stored.mode == "RGB"):
        return None
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    # Only the exact halvings, as PIL's draft: libjpeg's other n/8 scales decode slower.
    factor = 1
    while factor < 8 and all(side // (factor * 2) >= want
                             for side, want in zip(stored.size, needed)):  # fmt: skip
        factor *= 2
    try:
        pixels = simplejpeg.decode_jpeg(
            data, colorspace="RGB" if mode == "RGB" else "GRAY", strict=True,
            min_width=-(-stored.size[0] // factor), min_height=-(-stored.size[1] // factor),
            min_factor=factor,
        )  # fmt: skip
    except ValueError:
        return None
    return np.ascontiguousarray(pixels[..., 0]) if mode == "L" else pixels


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a malformed EXIF block: show the image as stored
        return 1


def _as_mode(image: Image.Image, mode: str) -> Image.Image:
    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "I":
        # PIL's own conversion clips 16-bit values at 255 instead of rescaling them.
        values = np.asarray(image, dtype=np.int64)
        if image.mode != "I" or values.max(initial=0) > 255:
            values = values // 257
        image = Image.fromarray(values.clip(0, 255).astype(np.uint8))
    return image if image.mode == mode else image.convert(mode)
