"""Reference points for a tokenizer's reconstructions at a given number of bits.

A tokenizer that stores ``bits`` bits per image should beat the simplest code of the same
size: a small 8-bit RGB thumbnail. :func:`thumbnail_baseline` builds that thumbnail (area
averaging down to the largest ``k x k`` whose ``24 k^2`` bits fit) and blows it back up
bicubically, so PSNR / SSIM of the result are the figures to beat. The demo prints them
beside the tokenizer's (``python -m examples.photo_demo.report``, docs/demo.md).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ThumbnailBaseline", "thumbnail_side", "thumbnail_baseline"]

BITS_PER_PIXEL_RGB8 = 24
"""An 8-bit RGB pixel: 3 channels x 8 bits."""


@dataclass(frozen=True)
class ThumbnailBaseline:
    """The result of :func:`thumbnail_baseline`.

    Attributes:
        side: ``k``, the thumbnail's side in pixels (the thumbnail is ``k x k``).
        bits: the thumbnail's size, ``24 k^2`` bits (<= the budget given).
        thumbnail: the thumbnails, float32 ``(B, 3, k, k)`` in [-1, 1] on the 8-bit grid
            (``(u / 127.5) - 1`` for integers ``u`` in 0..255).
        images: the thumbnails blown back up to the input size, float32 ``(B, 3, H, W)`` in
            [-1, 1], each pixel quantised to 8 bits at thumbnail size.
    """

    side: int
    bits: int
    thumbnail: Tensor
    images: Tensor


def thumbnail_side(bits: int, height: int, width: int) -> int:
    """``k``: the largest square 8-bit RGB thumbnail side with ``24 k^2 <= bits``, at most
    ``min(height, width)``.

    Python and NumPy integers are accepted.

    Raises:
        ValueError: ``bits`` is not an int >= 24 (one RGB pixel), or a side is not a positive int.
    """
    checked = []
    for name, v in (("bits", bits), ("height", height), ("width", width)):
        try:
            if isinstance(v, bool):
                raise TypeError
            checked.append(operator.index(v))
        except TypeError:
            raise ValueError(f"{name} must be an int, got {v!r}") from None
    bits, height, width = checked
    if bits < BITS_PER_PIXEL_RGB8:
        raise ValueError(f"bits must be >= {BITS_PER_PIXEL_RGB8} (one 8-bit RGB pixel), got {bits}")
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {height} x {width}")
    k = math.isqrt(bits // BITS_PER_PIXEL_RGB8)
    return min(k, height, width)


def thumbnail_baseline(images: Tensor, bits: int) -> ThumbnailBaseline:
    """The same-bits thumbnail code of ``images``: area-average down to ``k x k``, store as
    8-bit RGB (``24 k^2 <= bits``), upsample bicubically back to ``(H, W)``.

    Args:
        images: float ``(B, 3, H, W)`` in [-1, 1] (finite).
        bits: the bit budget per image (e.g. a tokenizer's ``code_length * code_channels``),
            an int >= 24.

    Returns:
        :class:`ThumbnailBaseline`. Downsampling is ``F.interpolate(mode="area")`` (exact block
        means when ``k`` divides the sides); the thumbnail is rounded to 8 bits
        (``round((x + 1) * 127.5)``); upsampling is ``F.interpolate(mode="bicubic",
        align_corners=False)`` (Keys' cubic, a = -0.75), clamped to [-1, 1]. A thumbnail as
        large as the image is the image itself, rounded to 8 bits. The thumbnail is square, so
        for a non-square image it is at most ``min(H, W)`` on a side.

    Raises:
        ValueError: ``images`` is not a finite float ``(B, 3, H, W)`` tensor, or ``bits``
            is invalid (:func:`thumbnail_side`).
    """
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, 3, H, W) tensor, got {got}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [-1, 1], got dtype {images.dtype}")
    if images.numel() == 0:
        raise ValueError(f"images must not be empty, got shape {tuple(images.shape)}")
    if images.device.type == "meta":
        raise ValueError("images must hold data (got a tensor on the 'meta' device)")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images must be finite")
    h, w = images.shape[-2:]
    k = thumbnail_side(bits, int(h), int(w))
    x = images.detach().float()
    small = F.interpolate(x, size=(k, k), mode="area")
    small = torch.round((small.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1
    if (k, k) == (h, w):
        up = small
    else:
        up = F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False)
    return ThumbnailBaseline(side=k, bits=BITS_PER_PIXEL_RGB8 * k * k, thumbnail=small, images=up.clamp(-1, 1))
