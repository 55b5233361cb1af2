"""A reader for the IDX format: the files of MNIST and Fashion-MNIST.

The format (LeCun, Cortes & Burges, "THE MNIST DATABASE of handwritten digits", the page's
"FILE FORMATS FOR THE MNIST DATABASE"):

* a 4-byte magic number: two zero bytes, a type code, the number of dimensions n (1..255);
* n dimension sizes, each a big-endian unsigned 32-bit integer;
* the values in C order (last dimension fastest), big-endian, of the type:
  0x08 unsigned byte, 0x09 signed byte, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64.

E.g. ``train-images-idx3-ubyte`` starts 00 00 08 03, then 60000, 28, 28.

Files may be gzip-compressed (as distributed, ``*.gz``): gzip is recognised by its magic bytes
(1f 8b), not by the file name, and decompressed as a stream, reading no more than the header
announces (plus one byte to detect trailing data), so a bad header cannot make it allocate
more than the file holds.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np

__all__ = ["IDX_DTYPES", "IDXFormatError", "read_idx"]

PathLike = Union[str, "os.PathLike[str]"]

#: IDX type code -> numpy dtype of the stored (big-endian) values.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


class IDXFormatError(ValueError):
    """A file that is not a well-formed IDX file (the message names the file and the fault)."""


_CHUNK = 1 << 24


def _read_exact(f: BinaryIO, n: int, name: str, what: str) -> bytes:
    """Exactly ``n`` bytes, read in chunks of at most 16 MiB, so memory grows only with what the
    file really holds (a header may announce up to 255 sizes of 2^32 - 1)."""
    data = bytearray()
    try:
        while len(data) < n:
            chunk = f.read(min(_CHUNK, n - len(data)))
            if not chunk:
                break
            data += chunk
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise IDXFormatError(f"{name}: the gzip stream is corrupt or truncated while reading {what} "
                             f"({type(exc).__name__}: {exc})") from None
    if len(data) != n:
        raise IDXFormatError(f"{name}: truncated: {what} needs {n} bytes, the file has {len(data)} left")
    return data


def _parse(f: BinaryIO, name: str) -> np.ndarray:
    magic = _read_exact(f, 4, name, "the 4-byte magic number")
    if magic[0] != 0 or magic[1] != 0:
        raise IDXFormatError(f"{name}: not an IDX file: the magic number {magic.hex()} does not start "
                             "with two zero bytes")
    code, ndim = magic[2], magic[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise IDXFormatError(f"{name}: unknown IDX type code 0x{code:02X} (known: {known})")
    if ndim == 0:
        raise IDXFormatError(f"{name}: the magic number declares 0 dimensions (IDX arrays have >= 1)")
    shape = struct.unpack(f">{ndim}I", _read_exact(f, 4 * ndim, name, f"the {ndim} dimension sizes"))
    dtype = IDX_DTYPES[code]
    count = 1
    for s in shape:
        count *= s
    nbytes = count * dtype.itemsize
    body = _read_exact(f, nbytes, name, f"the data of shape {shape} ({dtype.name} values)")
    try:
        extra = f.read(1)
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise IDXFormatError(f"{name}: the gzip stream is corrupt after the data "
                             f"({type(exc).__name__}: {exc})") from None
    if extra:
        raise IDXFormatError(f"{name}: trailing bytes after the data of shape {shape}: not a single IDX array")
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: PathLike) -> np.ndarray:
    """The array stored in the IDX file ``path`` (plain or gzip-compressed).

    Returns a new, writable, C-contiguous numpy array in native byte order, of the file's
    shape (ndim >= 1) and dtype (uint8, int8, int16, int32, float32 or float64, by the type
    code; see the module docstring).

    Raises ``FileNotFoundError`` / ``IsADirectoryError`` as ``open`` does, and
    :class:`IDXFormatError` (a ``ValueError``) naming the file and the fault for: a magic
    number not starting with two zero bytes, an unknown type code, zero dimensions, fewer
    bytes than the header announces (truncated), trailing bytes after the data, or a corrupt
    or truncated gzip stream.
    """
    path = Path(path)
    name = str(path)
    with open(path, "rb") as raw:
        head = raw.read(2)
        raw.seek(0)
        if head == _GZIP_MAGIC:
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                return _parse(f, name)
        return _parse(raw, name)
