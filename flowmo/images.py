"""The one image decoder of flowmo: an image file -> RGB pixels, by documented rules.

Every code path that reads an image file goes through :func:`decode_image`: the training and
evaluation datasets (:class:`flowmo.train.data.ImageFolderDataset`, also behind
``flowmo eval --data FOLDER`` and the trainer's held-out folder), the command line's
``reconstruct`` / ``tokenize`` (:func:`flowmo.io.load_image`) and the built-in photo that ships
as a JPEG. :func:`image_to_tensor` turns the result into the library's image format, a float32
``(3, H, W)`` tensor in [-1, 1].

Decoding rules, by the mode Pillow gives the opened file (the value ``v`` of a sample, the
result ``x`` in [0, 1]; the tensor is ``2 x - 1``):

=========================================  ======================================================
Pillow mode (typical files)                Rule
=========================================  ======================================================
``1`` (bilevel PNG/TIFF/BMP)               0 -> black, 1 -> white.
``L`` (8-bit grey)                         ``x = v / 255``, copied to R, G and B.
``P`` (palette PNG/GIF/TIFF)               the palette's RGB colour (``v / 255``).
``RGB``, ``RGBX``                          ``x = v / 255`` (padding byte dropped).
``CMYK`` (JPEG/TIFF)                       Pillow's conversion, ``R = (255 - C)(255 - K) / 255``
                                           rounded (G from M, B from Y); no ICC profile.
``YCbCr`` (TIFF)                           Pillow's conversion (JPEG/JFIF full-range BT.601).
``LAB`` (CIELab TIFF)                      Pillow's CIELab (D50) -> sRGB conversion.
``HSV``                                    Pillow's conversion.
``LA``, ``PA``, ``RGBA``, ``RGBa``, and    composited over white (below).
``1``/``L``/``P``/``RGB`` with a
transparent colour (PNG ``tRNS``, GIF)
``I;16``, ``I;16L``, ``I;16B``, ``I;16N``  ``x = v / 65535`` (the full range of the type) at float32
(16-bit grey PNG, TIFF, JPEG 2000)         precision, not rounded to 8 bits. A ``tRNS`` transparent
                                           grey level becomes white.
``I`` (32-bit integer)                     PGM/PPM (Pillow rescales ``maxval`` to 65535):
                                           ``x = v / 65535``. TIFF with unsigned samples of
                                           ``b`` bits (``BitsPerSample``): ``x = v / (2**b - 1)``
                                           (32-bit samples read as unsigned). Signed TIFF samples
                                           and ``I`` from any other format (no known black and
                                           white level): refused.
``F`` (32-bit float TIFF/PFM)              ``x = v`` if every sample is finite and in [0, 1];
                                           otherwise refused (the range is not guessed).
16-bit colour (RGB/RGBA PNG and TIFF,      Pillow opens these as 8-bit ``RGB``/``RGBA`` keeping the
16-bit grey+alpha PNG)                     high byte of each sample (``v >> 8``): correctly scaled
                                           (65535 -> 1.0), 8-bit precision (an error below 1/255).
anything else (``La``, formats Pillow      refused.
cannot open, 16/64-bit float TIFF)
=========================================  ======================================================

TIFF files stored as "min is white" (``PhotometricInterpretation`` 0) are inverted for the
modes converted here (``I;16*``, ``I``, ``F``: ``x = 1 - x``); Pillow already inverts the
8-bit and bilevel ones.

Transparency is composited over **white**: ``out = round((c a + 255 (255 - a)) / 255)`` with
``c`` and ``a`` the 8-bit colour and alpha. White because transparent images are mostly
graphics, logos and scans made to be shown on a white page (a browser's default
background); over black, dark content on a transparent background would vanish. Fully
transparent pixels therefore come out white, whatever colour they store.

Also: the EXIF orientation tag is applied (``ImageOps.exif_transpose``), so photos load
upright; embedded ICC profiles are not applied (values are taken as sRGB); of a multi-frame
file (animated GIF/PNG/WebP, multi-page TIFF) the first frame is used.

What the rules refuse raises :class:`UnsupportedImageError`, a ``ValueError`` naming the file;
the datasets skip, count and log such files exactly as they do corrupt ones, and the command
line refuses them like a corrupt file (exit status 2, one line naming the file).
"""

from __future__ import annotations

import os
from typing import IO, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageOps

__all__ = [
    "IMAGE_EXTENSIONS",
    "BACKGROUND",
    "UnsupportedImageError",
    "check_convertible",
    "decode_image",
    "image_to_tensor",
    "resize_short_side",
    "center_crop",
]

#: File extensions (lower case, without the dot) read from image folders by training, ``flowmo
#: eval`` and the CLI's folder inputs: the formats Pillow decodes that hold photos or scans.
IMAGE_EXTENSIONS: Tuple[str, ...] = ("jpg", "jpeg", "png", "webp", "tif", "tiff", "bmp", "gif", "ppm", "pgm")

#: The colour transparent pixels are composited over: white, 8-bit RGB.
BACKGROUND: Tuple[int, int, int] = (255, 255, 255)

# Modes Pillow converts to RGB by a fixed formula, 8 bits per sample.
_EIGHT_BIT = frozenset({"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"})
# 8-bit modes with an alpha band (RGBa: premultiplied; Pillow un-premultiplies it).
_ALPHA = frozenset({"LA", "PA", "RGBA", "RGBa"})
# 16-bit unsigned grey, any byte order.
_UINT16 = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})

# TIFF tags read from the header.
_BITS_PER_SAMPLE, _PHOTOMETRIC, _SAMPLE_FORMAT = 258, 262, 339

Source = Union[str, "os.PathLike[str]", IO[bytes]]


class UnsupportedImageError(ValueError):
    """The file decodes, but its pixels have no defined RGB meaning under the rules of
    :mod:`flowmo.images` (e.g. 32-bit float samples outside [0, 1], signed integer samples)."""


def _name(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fspath(source))
    return repr(getattr(source, "name", "<file object>"))


def _tiff_tag(im: Image.Image, tag: int):
    tags = getattr(im, "tag_v2", None)
    if tags is None:
        return None
    value = tags.get(tag)
    if isinstance(value, tuple):
        return value[0] if value and all(v == value[0] for v in value) else value
    return value


def _integer_max(im: Image.Image) -> int:
    """The white level of a mode ``I`` image from its header; UnsupportedImageError if unknown."""
    fmt = im.format or "unknown"
    if fmt in ("PPM", "PGM"):
        return 65535  # Pillow rescales PGM/PPM samples from maxval to 0..65535
    if fmt == "TIFF":
        sample_format = _tiff_tag(im, _SAMPLE_FORMAT)
        bits = _tiff_tag(im, _BITS_PER_SAMPLE)
        if sample_format not in (None, 1):
            raise UnsupportedImageError(
                f"signed (SampleFormat {sample_format}) integer samples have no defined black and white level")
        if isinstance(bits, int) and 1 <= bits <= 32:
            return 2**bits - 1
        raise UnsupportedImageError(f"32-bit integer image with an unusable BitsPerSample ({bits!r})")
    raise UnsupportedImageError(
        f"32-bit integer pixels (mode I) from a {fmt} file have no known bit depth, so no white level")


def check_convertible(im: Image.Image) -> None:
    """Raise :class:`UnsupportedImageError` if the header of the opened image ``im`` already
    shows that :func:`decode_image` would refuse it (unknown mode, signed integer samples,
    32-bit integers of unknown depth). Reads no pixels, so mode ``F`` files pass here and
    are checked for their range when decoded."""
    mode = im.mode
    if mode in _EIGHT_BIT or mode in _ALPHA or mode in _UINT16 or mode == "F":
        return
    if mode == "I":
        _integer_max(im)
        return
    raise UnsupportedImageError(f"pixel mode {mode!r} has no RGB conversion in flowmo")


def _has_transparency(im: Image.Image) -> bool:
    if im.mode in _ALPHA or "transparency" in im.info:
        return True
    return im.mode == "P" and im.palette is not None and im.palette.mode == "RGBA"


def _composite_over_background(im: Image.Image) -> Image.Image:
    """8-bit image with alpha or a transparent colour -> RGB over :data:`BACKGROUND`."""
    rgba = np.asarray(im.convert("RGBA"), dtype=np.uint32)
    alpha = rgba[..., 3:4]
    background = np.asarray(BACKGROUND, dtype=np.uint32)
    num = rgba[..., :3] * alpha + background * (255 - alpha)
    # num / 255 never ends in exactly .5 (255 is odd), so this is round-to-nearest.
    rgb = ((num + 127) // 255).astype(np.uint8)
    return Image.fromarray(rgb)


def _grey_float(im: Image.Image, unit: np.ndarray) -> Image.Image:
    """Grey values in [0, 1] (float32, H x W) -> a mode ``F`` image, applying TIFF min-is-white."""
    if im.format == "TIFF" and _tiff_tag(im, _PHOTOMETRIC) == 0:
        # Pillow reads these modes without inverting them (it does invert 1 and L).
        unit = 1.0 - unit
    return Image.fromarray(np.ascontiguousarray(unit, dtype=np.float32))


def _to_rgb(im: Image.Image, name: str) -> Image.Image:
    """Apply the decoding rules to a loaded image (see the module docstring)."""
    mode = im.mode
    if mode in _EIGHT_BIT or mode in _ALPHA:
        if _has_transparency(im):
            return _composite_over_background(im)
        return im.convert("RGB")
    if mode in _UINT16:
        raw = np.asarray(im)  # uint16 in the mode's byte order
        unit = raw.astype(np.float32) / np.float32(65535)
        key = im.info.get("transparency")
        grey = _grey_float(im, unit)
        if isinstance(key, int) and not isinstance(key, bool):
            unit = np.asarray(grey, dtype=np.float32).copy()
            unit[raw == key] = 1.0  # transparent grey level -> white background
            grey = Image.fromarray(unit)
        return grey
    if mode == "I":
        try:
            top = _integer_max(im)
        except UnsupportedImageError as e:
            raise UnsupportedImageError(f"{name}: {e}") from None
        raw = np.asarray(im)
        if top == 2**32 - 1:
            raw = raw.view(np.uint32)  # Pillow stores unsigned 32-bit samples as int32
        lo, hi = int(raw.min(initial=0)), int(raw.max(initial=0))
        if lo < 0 or hi > top:
            raise UnsupportedImageError(f"{name}: integer samples in [{lo}, {hi}] exceed the declared range [0, {top}]")
        unit = (raw.astype(np.float64) / top).astype(np.float32)
        return _grey_float(im, unit)
    if mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise UnsupportedImageError(f"{name}: 32-bit float samples include NaN or infinity")
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if lo < 0.0 or hi > 1.0:
            raise UnsupportedImageError(
                f"{name}: 32-bit float samples lie in [{lo:.6g}, {hi:.6g}], not in [0, 1]; "
                "flowmo does not guess the range of float images (rescale them to [0, 1])")
        return _grey_float(im, arr)
    raise UnsupportedImageError(f"{name}: pixel mode {mode!r} has no RGB conversion in flowmo")


def decode_image(source: Source) -> Image.Image:
    """Decode an image file fully and convert it to RGB by the module's rules.

    ``source``: a path (``str`` / ``os.PathLike``) or a binary file object.

    Returns a PIL image, already EXIF-oriented, in one of two modes:

    * ``"RGB"`` - 8 bits per sample (``uint8``, value ``v`` meaning ``v / 255``): every file
      whose samples have at most 8 bits, including Pillow's 8-bit view of 16-bit colour files;
    * ``"F"`` - one float32 grey band with values in [0, 1]: single-channel files with more
      than 8 bits per sample (16-bit grey PNG/TIFF, 32-bit integer or float TIFF), kept at
      full precision. Resampling may overshoot [0, 1]; :func:`image_to_tensor` clamps.

    Raises ``FileNotFoundError`` for a missing path; ``PIL.UnidentifiedImageError`` (an
    ``OSError``), ``OSError``, ``ValueError``, ``SyntaxError`` or
    ``PIL.Image.DecompressionBombError`` for unreadable, corrupt or truncated data (whatever
    Pillow raises); :class:`UnsupportedImageError` (a ``ValueError`` naming the file) for
    pixels the rules refuse.
    """
    if not isinstance(source, (str, os.PathLike)) and not hasattr(source, "read"):
        raise TypeError(f"source must be a path or a binary file object, got {type(source).__name__}")
    name = _name(source)
    with Image.open(source) as opened:
        opened.load()  # full decode: raises on truncated or corrupt data
        try:
            check_convertible(opened)
        except UnsupportedImageError as e:
            raise UnsupportedImageError(f"{name}: {e}") from None
        oriented = ImageOps.exif_transpose(opened)
        if oriented is not opened:
            # exif_transpose returns a new image without the format and TIFF tags the rules read
            oriented.format = opened.format
            if hasattr(opened, "tag_v2"):
                oriented.tag_v2 = opened.tag_v2  # type: ignore[attr-defined]
        return _to_rgb(oriented, name)


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """A decoded image (mode ``"RGB"`` or ``"F"``, as :func:`decode_image` returns, after any
    resizing/cropping) -> float32 tensor ``(3, H, W)`` in [-1, 1].

    ``RGB``: ``v / 127.5 - 1``. ``F``: ``2 clamp(v, 0, 1) - 1``, the grey band copied to R, G
    and B. Raises ``ValueError`` naming ``img`` for any other mode."""
    if not isinstance(img, Image.Image):
        raise TypeError(f"img must be a PIL.Image.Image, got {type(img).__name__}")
    if img.mode == "RGB":
        arr = np.asarray(img, dtype=np.uint8)
        t = torch.from_numpy(arr.copy()).permute(2, 0, 1).to(torch.float32)
        return t / 127.5 - 1.0
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        grey = torch.from_numpy(arr.copy()).clamp_(0.0, 1.0).mul_(2.0).sub_(1.0)
        return grey.unsqueeze(0).expand(3, -1, -1).contiguous()
    raise ValueError(f"img must be a decoded image of mode 'RGB' or 'F', got mode {img.mode!r}")


def resize_short_side(img: Image.Image, size: int) -> Image.Image:
    """Resize ``img`` (any PIL mode) so its short side is exactly ``size`` pixels, keeping the
    aspect ratio (bicubic; Pillow antialiases when shrinking). Returned unchanged if the short
    side is already ``size``. Raises ``ValueError`` naming ``size`` unless it is a positive int."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
        raise ValueError(f"size must be a positive int, got {size!r}")
    w, h = img.size
    if min(w, h) == size:
        return img
    scale = size / min(w, h)
    new_w = size if w <= h else max(size, round(w * scale))
    new_h = size if h < w else max(size, round(h * scale))
    return img.resize((new_w, new_h), Image.Resampling.BICUBIC)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """The centred ``size`` x ``size`` crop of ``img`` (offsets rounded down); ``ValueError``
    naming ``size`` if it exceeds a side of the image."""
    w, h = img.size
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 0 < size <= min(w, h):
        raise ValueError(f"size must be a positive int no larger than the image's short side {min(w, h)}, got {size!r}")
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))
