"""The one image decoder of flowmo: an image file -> RGB pixels, by documented rules.

Every code path that reads an image file goes through :func:`decode_image`: the training and
evaluation datasets (:class:`flowmo.data.folders.ImageFolderDataset`, also behind
``flowmo eval --data FOLDER`` and the trainer's held-out folder), the command line's
``reconstruct`` / ``tokenize`` (:func:`flowmo.cli.io.load_image`) and the built-in photo that ships
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
(:func:`resize_short_side`, and the datasets and ``flowmo.cli.io.load_image`` through it) is
bounded by the same limit, :func:`pixel_limit` (89,478,485 pixels by default): a target
short side ``size`` must satisfy ``size * size <= pixel_limit()`` (at most 9,459;
``ValueError`` naming ``size``), and an image whose resized size would exceed it (a very
long, thin image such as 1,000,000 x 1, which would become 256 x 256,000,000 at size 256)
is refused with :class:`UnsupportedImageError` naming the file, see :func:`resized_size`.

What the rules refuse raises :class:`UnsupportedImageError`, a ``ValueError`` naming the file;
the datasets skip, count and log such files exactly as they do corrupt ones, and the command
line refuses them like a corrupt file (exit status 2, one line naming the file).

The code is in three files: this one (opening regular files, EXIF orientation,
:func:`decode_image`, :func:`image_to_tensor`), :mod:`flowmo.data.image_modes` (the rules by
mode) and :mod:`flowmo.data.image_sizes` (the pixel limit, resizing, cropping); every name
listed in ``__all__`` is importable from here.
"""

from __future__ import annotations

import os
import stat
from typing import IO, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image

from .image_modes import UnsupportedImageError, _png_rawmode, _tiff_tag, _to_rgb

__all__ = ["IMAGE_EXTENSIONS", "decode_image", "image_to_tensor", "open_image_file"]

#: File extensions (lower case, without the dot) read from image folders by training, ``flowmo
#: eval`` and the CLI's folder inputs: the formats Pillow decodes that hold photos or scans.
IMAGE_EXTENSIONS: Tuple[str, ...] = ("jpg", "jpeg", "png", "webp", "tif", "tiff", "bmp", "gif", "ppm", "pgm")

Source = Union[str, "os.PathLike[str]", IO[bytes]]


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
        # the mode rules (refusing what check_convertible refuses), per pixel: before or after orienting alike
        rgb = _to_rgb(opened, name, rawmode, fp)
        method = _UPRIGHT.get(_orientation(opened))  # None if none, or if Pillow applied it already
        if method is not None:
            rgb = rgb.transpose(method)
        if tiff_size is not None and tiff_orientation in (5, 6, 7, 8):
            tiff_size = tiff_size[::-1]
        if tiff_size is not None and tiff_orientation in range(1, 9) and rgb.size != tiff_size:
            raise UnsupportedImageError(f"{name}: the TIFF's EXIF orientation {tiff_orientation} was not applied "
                                        f"correctly by this Pillow version (decoded {rgb.size}, expected {tiff_size})")
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
            raise ValueError("img (mode 'F') holds NaN or infinite values; a decoded image holds grey values in [0, 1]")
        grey = torch.from_numpy(arr.copy()).clamp_(0.0, 1.0).mul_(2.0).sub_(1.0)
        return grey.unsqueeze(0).expand(3, -1, -1).contiguous()
    raise ValueError(f"img must be a decoded image of mode 'RGB' or 'F', got mode {img.mode!r}")
