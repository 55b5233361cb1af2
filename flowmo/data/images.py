"""The one image decoder of flowmo: an image file -> RGB pixels, by documented rules.

Every code path that reads an image file goes through :func:`decode_image`: the training and
evaluation datasets (:class:`flowmo.data.folders.ImageFolderDataset`, also behind
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
transparent colour (PNG ``tRNS``, GIF;
keys compared at the file's bit depth)
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

A transparent colour (PNG ``tRNS`` colour key, grey or RGB) is compared with the stored
samples at the file's own bit depth, as libpng does (key bits above the depth ignored): a
1/2/4-bit grey key against the stored 1/2/4-bit value (Pillow scales the pixels to 8 bits,
not the key), a 16-bit grey or RGB key against all 16 bits of each sample (for 16-bit RGB,
whose pixels Pillow keeps as their high byte, the low bytes are decoded from the file a
second time). Matching pixels become white; the others keep their colour.

The EXIF orientation tag (values 1-8) is applied, so photos load upright: the decoded pixels
are rotated/flipped as ``ImageOps.exif_transpose`` would. Files are always decoded through a
file object: given a path, Pillow 13 memory-maps uncompressed 8-bit grey, palette, 16-bit
grey, RGBA and CMYK TIFFs and scrambles those with orientations 5-8; a TIFF whose decoded
size does not match its header and orientation is refused rather than returned scrambled.

Also: embedded ICC profiles are not applied (values are taken as sRGB); of a multi-frame
file (animated GIF/PNG/WebP, multi-page TIFF) the first frame is used.

Only regular files are read (:func:`open_image_file`): a named pipe, socket, device or
folder with an image name raises ``ValueError`` naming it, without reading (a named pipe
would block forever). Pillow's decompression-bomb check applies when a file is opened
(more than twice ``PIL.Image.MAX_IMAGE_PIXELS`` pixels: ``DecompressionBombError``). Resizing
(:func:`resize_short_side`, and the datasets and ``flowmo.io.load_image`` through it) is
bounded by the same limit, :func:`pixel_limit` (89,478,485 pixels by default): a target
short side ``size`` must satisfy ``size * size <= pixel_limit()`` (at most 9,459;
``ValueError`` naming ``size``), and an image whose resized size would exceed it (a very
long, thin image such as 1,000,000 x 1, which would become 256 x 256,000,000 at size 256)
is refused with :class:`UnsupportedImageError` naming the file, see :func:`resized_size`.

What the rules refuse raises :class:`UnsupportedImageError`, a ``ValueError`` naming the file;
the datasets skip, count and log such files exactly as they do corrupt ones, and the command
line refuses them like a corrupt file (exit status 2, one line naming the file).
"""

from __future__ import annotations

import math
import os
import stat
from typing import IO, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image

__all__ = [
    "IMAGE_EXTENSIONS",
    "BACKGROUND",
    "DEFAULT_PIXEL_LIMIT",
    "UnsupportedImageError",
    "check_convertible",
    "check_size",
    "decode_image",
    "image_to_tensor",
    "open_image_file",
    "pixel_limit",
    "resized_size",
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
    :mod:`flowmo.data.images` (e.g. 32-bit float samples outside [0, 1], signed integer samples),
    or cannot be used as flowmo uses images (resized beyond :func:`pixel_limit` pixels, an
    EXIF orientation Pillow did not apply correctly). The message names the file."""


def _name(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fspath(source))
    return repr(getattr(source, "name", "<file object>"))


# ----------------------------------------------------------------------------- regular files
def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _not_regular(name: str, mode: int) -> ValueError:
    return ValueError(f"{name} is {_file_kind(mode)}, not a regular file; only regular files are read as images")


def open_image_file(path: Union[str, "os.PathLike[str]"]) -> IO[bytes]:
    """Open the file ``path`` for binary reading, refusing anything but a regular file.

    A named pipe, socket, device or folder with an image name raises ``ValueError`` naming
    the path (reading a FIFO would block until some other process writes to it; a device
    may never end); the check is made on the opened descriptor (opened non-blocking), so a
    file swapped for a FIFO after a listing cannot block either. Raises ``FileNotFoundError``
    (an ``OSError``) if ``path`` does not exist, other ``OSError`` if it cannot be opened."""
    name = repr(os.fspath(path))
    mode = os.stat(path).st_mode  # follows symlinks: a link to a regular file is fine
    if not stat.S_ISREG(mode):
        raise _not_regular(name, mode)  # refused before opening (opening a device may act)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):  # replaced between the stat and the open
            raise _not_regular(name, mode)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


# ----------------------------------------------------------------------------- size limits
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
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
        raise ValueError(f"{name} must be a positive int, got {size!r}")
    limit = pixel_limit()
    if int(size) > math.isqrt(limit):
        raise ValueError(
            f"{name} must be a positive int of at most {math.isqrt(limit)} ({name} x {name} pixels within Pillow's "
            f"decompression-bomb limit PIL.Image.MAX_IMAGE_PIXELS = {limit}), got {size!r}")
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
        raise UnsupportedImageError(
            f"{name}: an image of {w}x{h} pixels resized to a short side of {size} would have {new_w}x{new_h} = "
            f"{new_w * new_h} pixels, more than Pillow's decompression-bomb limit PIL.Image.MAX_IMAGE_PIXELS = "
            f"{limit} (aspect ratio {max(w, h) / short:.4g}:1)")
    return new_w, new_h


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
            raise UnsupportedImageError(
                f"{name}: a 16-bit colour PNG with a transparent colour (tRNS) whose samples could not be "
                "read at 16 bits to find the transparent pixels")
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
        raise UnsupportedImageError(
            f"{name}: PNG with a transparent colour (tRNS) and an unknown sample layout {rawmode!r}")
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
    """Apply the decoding rules to a loaded image (see the module docstring). ``rawmode``
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
            raise UnsupportedImageError(
                f"{name}: 32-bit float samples lie in [{lo:.6g}, {hi:.6g}], not in [0, 1]; "
                "flowmo does not guess the range of float images (rescale them to [0, 1])")
        return _grey_float(im, arr)
    raise UnsupportedImageError(f"{name}: pixel mode {mode!r} has no RGB conversion in flowmo")


# ----------------------------------------------------------------------------- orientation
_ORIENTATION = 0x0112
# EXIF orientation -> the transpose that makes the stored pixels upright.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation(im: Image.Image) -> Optional[int]:
    try:
        value = im.getexif().get(_ORIENTATION)
    except Exception:  # noqa: BLE001 - a damaged EXIF block: no orientation (as exif_transpose)
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _tiff_stored_size(im: Image.Image) -> Optional[Tuple[int, int]]:
    """A TIFF's stored (width, height) from its header, before any orientation."""
    w, h = _tiff_tag(im, 256), _tiff_tag(im, 257)
    return (w, h) if isinstance(w, int) and isinstance(h, int) else None


def decode_image(source: Source) -> Image.Image:
    """Decode an image file fully and convert it to RGB by the module's rules.

    ``source``: a path (``str`` / ``os.PathLike``) or a binary file object.

    Returns a PIL image, already EXIF-oriented, in one of two modes:

    * ``"RGB"`` - 8 bits per sample (``uint8``, value ``v`` meaning ``v / 255``): every file
      whose samples have at most 8 bits, including Pillow's 8-bit view of 16-bit colour files;
    * ``"F"`` - one float32 grey band with values in [0, 1]: single-channel files with more
      than 8 bits per sample (16-bit grey PNG/TIFF, 32-bit integer or float TIFF), kept at
      full precision. Resampling may overshoot [0, 1]; :func:`image_to_tensor` clamps.

    Raises ``FileNotFoundError`` for a missing path; ``ValueError`` naming the path for one
    that is not a regular file (a named pipe, socket, device or folder: refused without
    reading, see :func:`open_image_file`); ``PIL.UnidentifiedImageError`` (an ``OSError``),
    ``OSError``, ``ValueError``, ``SyntaxError`` or ``PIL.Image.DecompressionBombError`` (more
    than twice ``PIL.Image.MAX_IMAGE_PIXELS`` pixels) for unreadable, corrupt, truncated or
    oversized data (whatever Pillow raises); :class:`UnsupportedImageError` (a ``ValueError``
    naming the file) for pixels the rules refuse.
    """
    if not isinstance(source, (str, os.PathLike)) and not hasattr(source, "read"):
        raise TypeError(f"source must be a path or a binary file object, got {type(source).__name__}")
    name = _name(source)
    if isinstance(source, (str, os.PathLike)):
        with open_image_file(source) as fp:
            return _decode(fp, name)
    return _decode(source, name)


def _decode(fp: IO[bytes], name: str) -> Image.Image:
    # Always decoded from a file object: given a path, Pillow 13 memory-maps uncompressed
    # L/P/I;16/RGBA/CMYK TIFFs and then applies their EXIF orientation 5-8 to a buffer of
    # the already-rotated shape, scrambling the pixels; read through a file object it
    # applies the orientation correctly while loading (and removes the tag).
    with Image.open(fp) as opened:
        rawmode = _png_rawmode(opened)  # the tile is gone after load()
        tiff_size = _tiff_stored_size(opened) if opened.format == "TIFF" else None
        tiff_orientation = _tiff_tag(opened, 274) if opened.format == "TIFF" else None
        opened.load()  # full decode: raises on truncated or corrupt data
        try:
            check_convertible(opened)
        except UnsupportedImageError as e:
            raise UnsupportedImageError(f"{name}: {e}") from None
        rgb = _to_rgb(opened, name, rawmode, fp)  # per pixel, so before or after orienting alike
        method = _UPRIGHT.get(_orientation(opened))  # None if none, or if Pillow applied it already
        if method is not None:
            rgb = rgb.transpose(method)
        if tiff_size is not None and tiff_orientation in (5, 6, 7, 8):
            tiff_size = tiff_size[::-1]
        if tiff_size is not None and isinstance(tiff_orientation, int) and 1 <= tiff_orientation <= 8 \
                and rgb.size != tiff_size:
            raise UnsupportedImageError(
                f"{name}: the TIFF's EXIF orientation {tiff_orientation} was not applied correctly by this Pillow "
                f"version (decoded {rgb.size[0]}x{rgb.size[1]}, expected {tiff_size[0]}x{tiff_size[1]})")
        return rgb


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
        if not np.isfinite(arr).all():
            raise ValueError("img (mode 'F') holds NaN or infinite values; decoded images hold finite grey values "
                             "in [0, 1]")
        grey = torch.from_numpy(arr.copy()).clamp_(0.0, 1.0).mul_(2.0).sub_(1.0)
        return grey.unsqueeze(0).expand(3, -1, -1).contiguous()
    raise ValueError(f"img must be a decoded image of mode 'RGB' or 'F', got mode {img.mode!r}")


def resize_short_side(img: Image.Image, size: int) -> Image.Image:
    """Resize ``img`` (any PIL mode) so its short side is exactly ``size`` pixels, keeping the
    aspect ratio (bicubic; Pillow antialiases when shrinking). Returned unchanged if the short
    side is already ``size``. Raises ``ValueError`` naming ``size`` unless it is a positive int
    with ``size x size`` within :func:`pixel_limit`, and :class:`UnsupportedImageError` naming
    ``img`` if the result would exceed :func:`pixel_limit` pixels (see :func:`resized_size`)."""
    if not isinstance(img, Image.Image):
        raise TypeError(f"img must be a PIL.Image.Image, got {type(img).__name__}")
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
