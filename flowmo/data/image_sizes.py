"""Image sizes: Pillow's pixel limit as flowmo applies it to resizing (:func:`pixel_limit`,
:func:`check_size`, :func:`resized_size`), resizing the short side and centre cropping.
Every name here is importable from :mod:`flowmo.data.images` too."""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np
from PIL import Image

from .image_modes import UnsupportedImageError

__all__ = ["DEFAULT_PIXEL_LIMIT", "pixel_limit", "check_size", "resized_size", "resize_short_side", "center_crop"]


#: Pillow's default ``Image.MAX_IMAGE_PIXELS`` (its decompression-bomb warning threshold),
#: used as the resize limit when ``Image.MAX_IMAGE_PIXELS`` has been set to ``None``.
DEFAULT_PIXEL_LIMIT = 89_478_485


def pixel_limit() -> int:
    """The most pixels a resized image may have: Pillow's decompression-bomb limit
    ``PIL.Image.MAX_IMAGE_PIXELS`` (89,478,485 by default; read at each call, so raising it
    raises this too), or :data:`DEFAULT_PIXEL_LIMIT` if it was set to ``None`` (a resize
    target is never unbounded)."""
    limit = Image.MAX_IMAGE_PIXELS
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not limit > 0 or not math.isfinite(limit):
        return DEFAULT_PIXEL_LIMIT
    return max(1, int(limit))


def check_size(size, name: str = "size") -> int:
    """``size`` as an int if it is a usable square side: a positive int whose square
    ``size x size`` is at most :func:`pixel_limit` (9,459 at Pillow's default); else
    ``ValueError`` naming ``name``."""
    top = math.isqrt(pixel_limit())
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 0 < size <= top:
        raise ValueError(f"{name} must be a positive int of at most {top} (PIL.Image.MAX_IMAGE_PIXELS), got {size!r}")
    return int(size)


def resized_size(width: int, height: int, size, name: str = "img") -> Tuple[int, int]:
    """The ``(width, height)`` that :func:`resize_short_side` gives an image of
    ``width x height`` pixels for short side ``size``, computed without touching pixels.

    Raises ``ValueError`` naming ``size`` if :func:`check_size` refuses it, and
    :class:`UnsupportedImageError` naming ``name`` (the file, for callers that have one) for
    an empty image or one whose resized size would exceed :func:`pixel_limit` pixels: a very
    long, thin image (e.g. 1,000,000 x 1 upscaled to a short side of 256 would be 256 x
    256,000,000 pixels), refused instead of failing with ``MemoryError``."""
    size = check_size(size)
    w, h = int(width), int(height)
    if w <= 0 or h <= 0:
        raise UnsupportedImageError(f"{name}: the image has no pixels ({w}x{h})")
    short = min(w, h)
    if short == size:
        new_w, new_h = w, h
    else:
        scale = size / short
        new_w = size if w <= h else max(size, round(w * scale))
        new_h = size if h < w else max(size, round(h * scale))
    limit = pixel_limit()
    if new_w * new_h > limit:
        raise UnsupportedImageError(f"{name}: an image of {w}x{h} pixels resized to a short side of {size} would have "
                                    f"{new_w}x{new_h} = {new_w * new_h} pixels, more than Pillow's decompression-bomb limit MAX_IMAGE_PIXELS")
    return new_w, new_h


def resize_short_side(img: Image.Image, size: int) -> Image.Image:
    """Resize the PIL image ``img`` (any mode) so its short side is exactly ``size`` pixels, keeping
    the aspect ratio (bicubic; Pillow antialiases when shrinking). Returned unchanged if the short
    side is already ``size``. Raises ``ValueError`` naming ``size`` unless it is a positive int
    with ``size x size`` within :func:`pixel_limit`, and :class:`UnsupportedImageError` naming
    ``img`` if the result would exceed :func:`pixel_limit` pixels (see :func:`resized_size`)."""
    w, h = img.size
    new_w, new_h = resized_size(w, h, size, name="img")
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), Image.Resampling.BICUBIC)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """The centred ``size`` x ``size`` crop of ``img`` (offsets rounded down); ``ValueError``
    naming ``size`` if it exceeds a side of the image."""
    w, h = img.size
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 0 < size <= min(w, h):
        raise ValueError(f"size must be a positive int no larger than the image's short side {min(w, h)}, got {size!r}")
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))
