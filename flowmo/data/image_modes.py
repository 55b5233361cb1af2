"""The decoding rules of :mod:`flowmo.data.images`, by Pillow mode: a loaded image -> ``RGB``
(8 bits per sample) or ``F`` (float32 grey in [0, 1]), transparency composited over
:data:`BACKGROUND`, PNG transparent colours compared at the file's own bit depth, TIFF
"min is white" inverted; :func:`check_convertible` refuses from the header what the rules
would refuse. The rules table is in the docstring of :mod:`flowmo.data.images`, whose
:func:`~flowmo.data.images.decode_image` applies them; every public name here is importable
from there too."""

from __future__ import annotations

from typing import IO, Optional, Tuple

import numpy as np
from PIL import Image

__all__ = ["BACKGROUND", "UnsupportedImageError", "check_convertible"]


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


class UnsupportedImageError(ValueError):
    """The file decodes, but its pixels have no defined RGB meaning under the rules of
    :mod:`flowmo.data.images` (e.g. 32-bit float samples outside [0, 1], signed integer samples),
    or cannot be used as flowmo uses images (resized beyond :func:`~flowmo.data.image_sizes.pixel_limit` pixels, an
    EXIF orientation Pillow did not apply correctly). The message names the file."""


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
    sample_format, bits = _tiff_tag(im, _SAMPLE_FORMAT), _tiff_tag(im, _BITS_PER_SAMPLE)  # None unless TIFF
    if sample_format not in (None, 1):
        raise UnsupportedImageError(f"signed (SampleFormat {sample_format}) integer samples have no white level")
    if fmt != "TIFF" or not (isinstance(bits, int) and 1 <= bits <= 32):
        raise UnsupportedImageError(f"mode I pixels of a {fmt} file (BitsPerSample {bits!r}) have no known bit depth")
    return 2**bits - 1


def check_convertible(im: Image.Image) -> None:
    """Raise :class:`UnsupportedImageError` if the header of the opened image ``im`` already
    shows that :func:`decode_image` would refuse it (unknown mode, signed integer samples,
    32-bit integers of unknown depth). Reads no pixels, so mode ``F`` files pass here and
    are checked for their range when decoded."""
    if im.mode == "I":
        _integer_max(im)
    elif im.mode not in _EIGHT_BIT | _ALPHA | _UINT16 | {"F"}:
        raise UnsupportedImageError(f"pixel mode {im.mode!r} has no RGB conversion in flowmo")


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


# ----------------------------------------------------------------------------- PNG colour keys
# Sample bits of a PNG by Pillow's raw mode: a tRNS colour key is a value at this depth.
_PNG_KEY_BITS = {"1": 1, "L;2": 2, "L;4": 4, "L": 8, "I;16B": 16, "RGB": 8, "RGB;16B": 16}


def _png_rawmode(im: Image.Image) -> Optional[str]:
    """The raw sample layout of a PNG (``"L;4"``, ``"RGB;16B"``, ...), read before loading."""
    if im.format != "PNG" or not im.tile:
        return None
    args = im.tile[0][3]
    if isinstance(args, tuple):
        args = args[0] if args else None
    return args if isinstance(args, str) else None


def _png_low_bytes(fp: IO[bytes], name: str) -> np.ndarray:
    """The low bytes of a 16-bit RGB PNG's samples, (H, W, 3) uint8, in stored orientation.

    Pillow keeps only the high byte of 16-bit colour (raw mode ``RGB;16B``); decoding the
    same stream once more as little-endian (``RGB;16L``, same bits per pixel, so the same
    unfiltering and de-interlacing) takes the other byte of each sample."""
    fp.seek(0)
    with Image.open(fp, formats=["PNG"]) as im:
        tile = list(im.tile)
        if len(tile) != 1 or _png_rawmode(im) != "RGB;16B":
            raise UnsupportedImageError(f"{name}: a 16-bit colour PNG with a tRNS colour not readable at 16 bits")
        first = tile[0]
        im.tile = [first._replace(args="RGB;16L") if hasattr(first, "_replace") else first[:3] + ("RGB;16L",)]
        im.load()
        return np.asarray(im, dtype=np.uint8)


def _colour_key_mask(im: Image.Image, rawmode: Optional[str], fp: Optional[IO[bytes]], name: str):
    """Boolean (H, W) mask of the pixels equal to the transparent colour of a ``1``/``L``/
    ``RGB``/``I;16`` image (PNG ``tRNS``; GIF/other ``L`` keys), compared at the file's own bit
    depth; None when there is no usable key (other modes: Pillow's conversion applies).

    PNG keys are values at the image's sample depth (a 4-bit grey key 5 is the stored 5,
    which Pillow scales to 85; a 16-bit RGB key is matched against all 16 bits of each
    sample, which Pillow's 8-bit view of the pixels lacks); as in libpng, key bits above
    the sample depth are ignored."""
    key = im.info.get("transparency")
    mode = im.mode
    if key is None or mode not in ("1", "L", "RGB") and mode not in _UINT16:
        return None
    png = im.format == "PNG"
    bits = _PNG_KEY_BITS.get(rawmode) if png else None
    if png and bits is None:
        raise UnsupportedImageError(f"{name}: PNG with a tRNS colour and an unknown sample layout {rawmode!r}")
    if mode == "RGB":
        if not (isinstance(key, tuple) and len(key) == 3 and all(isinstance(k, int) for k in key)):
            return None
        arr = np.asarray(im, dtype=np.uint8)
        if bits == 16:
            if fp is None:
                raise UnsupportedImageError(f"{name}: cannot re-read the file to find its 16-bit transparent colour")
            full = (arr.astype(np.uint16) << 8) | _png_low_bytes(fp, name)
            return np.all(full == np.asarray([k & 0xFFFF for k in key], dtype=np.uint16), axis=-1)
        k8 = [k & 0xFF for k in key] if png else list(key)
        return np.all(arr == np.asarray(k8, dtype=np.int64), axis=-1)
    if isinstance(key, bool) or not isinstance(key, int):
        return None
    if mode == "1":  # Pillow's PNG reader gives 0 or 255; pixels are 0 or 255 too
        return np.asarray(im.convert("L"), dtype=np.uint8) == (255 if key else 0)
    if mode == "L":
        arr = np.asarray(im, dtype=np.uint8)
        if bits is not None and bits < 8:  # Pillow scales 2/4-bit samples to 8 bits, not the key
            top = 2**bits - 1
            return arr == (key & top) * (255 // top)
        return arr == ((key & 0xFF) if png else key)
    return np.asarray(im) == (key & 0xFFFF if png else key)  # 16-bit grey: the stored values


# ----------------------------------------------------------------------------- the rules
def _to_rgb(im: Image.Image, name: str, rawmode: Optional[str] = None, fp: Optional[IO[bytes]] = None) -> Image.Image:
    """Apply the decoding rules to a loaded image (the table in :mod:`flowmo.data.images`). ``rawmode``
    and ``fp`` (the PNG's raw mode read before loading, and its open file) let transparent
    colours be compared at the file's bit depth."""
    mode = im.mode
    mask = _colour_key_mask(im, rawmode, fp, name)
    if mode in _EIGHT_BIT or mode in _ALPHA:
        if mask is not None:  # transparent colour: those pixels become the background
            rgb = np.array(im.convert("RGB"), dtype=np.uint8)
            rgb[mask] = np.asarray(BACKGROUND, dtype=np.uint8)
            return Image.fromarray(rgb)
        if _has_transparency(im):
            return _composite_over_background(im)
        return im.convert("RGB")
    if mode in _UINT16:
        raw = np.asarray(im)  # uint16 in the mode's byte order
        unit = raw.astype(np.float32) / np.float32(65535)
        grey = _grey_float(im, unit)
        if mask is not None and mask.any():
            unit = np.asarray(grey, dtype=np.float32).copy()
            unit[mask] = 1.0  # transparent grey level -> white background
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
            raise UnsupportedImageError(f"{name}: 32-bit float samples lie in [{lo:.6g}, {hi:.6g}], not in [0, 1] "
                                        "(flowmo does not guess the range of float images: rescale them)")
        return _grey_float(im, arr)
    raise UnsupportedImageError(f"{name}: pixel mode {mode!r} has no RGB conversion in flowmo")
